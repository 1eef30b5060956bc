/*
 * connection.h: a client's connection to the broker over its life (connection.c): connect, Hello
 * and the section hand-over; after a dropped connection, re-attach to the section the broker kept
 * (session id + one-time token), or, with a new broker, the section handed back and every
 * reservation and commit registered again; fork detection; Goodbye and teardown.
 */
#ifndef MB_CLIENT_CONNECTION_H
#define MB_CLIENT_CONNECTION_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "membroker.h"

typedef struct mb_client mb_client;

/* Incremented in every forked child (pthread_atfork). */
extern atomic_uint mb_fork_generation;

/*
 * The entry check of every call that may cross to the broker. Clears the thread's last error, then:
 * E_INVALIDARG for NULL; HOST_E_CLRNOTAVAILABLE in a forked child or once the client is disabled.
 * If the connection was lost and nng has a connection again, it reconnects here, on the caller's
 * thread: a new Hello that re-attaches the section the broker kept (one round trip, nothing
 * re-sent); or, with a restarted broker (or when a request that changed the books lost its reply),
 * the section handed back and every reservation and committed run re-registered at the level its
 * pages were committed at (several round trips, under the map's read lock; the ranges the broker
 * refused are then decommitted in the map, under its write lock). S_OK when the client can be
 * used; HOST_E_CLRNOTAVAILABLE while the broker is unreachable.
 */
HRESULT mb_client_usable_or_reconnect(mb_client *client);

/*
 * After a call failed because the connection dropped under it: waits up to 2 s for nng to redial,
 * then reconnects as mb_client_usable_or_reconnect does. true if the client is connected again,
 * so the caller may repeat an operation the new broker has not seen.
 */
bool mb_client_reconnect_after_drop(mb_client *client);

/* Another client of this process whose reservations contain addr (for HOST_E_NOT_OWNER). */
bool mb_client_other_owner(const mb_client *client, uintptr_t addr);

/* Reference counting shared with the COM face; the last reference tears the client down. */
void mb_client_ref(mb_client *client);
void mb_client_unref(mb_client *client);

#endif
