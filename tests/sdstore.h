/*
 * sdstore.h: systemd's side of the file descriptor store, for tests without systemd as PID 1.
 *
 * A datagram socket that the broker finds in $NOTIFY_SOCKET (with $FDSTORE, the store's size):
 * a thread receives its sd_notify messages, keeps the descriptors of "FDSTORE=1" messages under
 * their FDNAME (SCM_RIGHTS), drops them at "FDSTOREREMOVE=1", answers "BARRIER=1" (closes the
 * descriptor it carries) and counts READY=1 and STOPPING=1. mb_test_store_start starts the broker
 * the way systemd restarts a service: with every stored descriptor at 3.. and LISTEN_FDS,
 * LISTEN_PID and LISTEN_FDNAMES set. The store keeps its descriptors across the restart, like
 * systemd.
 */
#ifndef MB_TEST_SDSTORE_H
#define MB_TEST_SDSTORE_H

#include <stdbool.h>
#include <stddef.h>

#include "harness.h"

typedef struct mb_test_store mb_test_store;

/* A store of capacity descriptors whose socket lives in dir. NULL on failure (message printed). */
mb_test_store *mb_test_store_open(const char *dir, unsigned capacity);
void mb_test_store_close(mb_test_store *st);

/* Starts membrokerd on address with extra_args, attached to the store and handed everything in it
 * (none the first time). 0 or -1 (as mb_test_broker_start_at). */
int mb_test_store_start(mb_test_store *st, mb_test_broker *b, const char *address,
			const char *const *extra_args);

/* Descriptors held under names starting with prefix ("" for all). */
size_t mb_test_store_count(mb_test_store *st, const char *prefix);

/* Whether a descriptor named exactly name is held. */
bool mb_test_store_has(mb_test_store *st, const char *name);

/* Replaces the content of the descriptor named name (the snapshot) with len bytes of data, for
 * tests of damaged snapshots; truncates it when data is NULL and len 0. 0 or -1. */
int mb_test_store_rewrite(mb_test_store *st, const char *name, const void *data, size_t len);

/* Reads the descriptor named name into a malloc'd buffer. 0 or -1. */
int mb_test_store_read(mb_test_store *st, const char *name, void **data, size_t *len);

/* Answers the next BARRIER=1 only after ms (systemd busy elsewhere): the broker waits for it
 * with its books frozen, answering every request as a stopping broker does. */
void mb_test_store_hold_barrier(mb_test_store *st, unsigned ms);

/* Times the broker said READY=1 and STOPPING=1. */
unsigned mb_test_store_ready(mb_test_store *st);
unsigned mb_test_store_stopping(mb_test_store *st);

#endif
