/*
 * transport.h: one request to the broker and its reply (transport.c).
 *
 * A call takes a REQ context (a slot) from the client's pool, sends the request (its request_id is
 * assigned here), and waits for the reply. What a failure means for the connection is decided here
 * and only recorded in the client: a send or receive that fails marks the connection lost (the next
 * call reconnects, connection.c); a reply that is malformed or answers another request, or an
 * E_FAIL from the broker, disables the client (the hosting contract). The failure's text is kept
 * per thread for mb_last_error().
 *
 * Thread safety: any number of threads may call at once, each on its own slot.
 */
#ifndef MB_CLIENT_TRANSPORT_H
#define MB_CLIENT_TRANSPORT_H

#include <stdint.h>

#include "mb_wire.h"
#include "membroker.h"

typedef struct mb_client mb_client;
typedef struct mb_call_slot mb_call_slot;

/* Longest failure text kept for mb_last_error(). */
#define MB_CLIENT_ERROR_MAX (MB_WIRE_MAX_DETAIL + 128)

/* Requests this thread has sent, over all clients: a call that sees it change made a round trip
 * (mb_get_client_stats). */
extern _Thread_local uint64_t mb_thread_round_trips;

/* Records a failure reason for mb_last_error() and returns hr. */
HRESULT mb_client_error(HRESULT hr, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Forgets this thread's last failure (at the start of every public call). */
void mb_client_clear_error(void);

/* Call timeout; $MEMBROKER_TIMEOUT_MS overrides the default of 30 s. */
int mb_client_timeout_ms(void);

/*
 * Sends req on a pooled slot and waits for the response. Returns S_OK with *resp (free with
 * mb_wire_free_response) or a transport failure: HOST_E_CLRNOTAVAILABLE (the connection is marked
 * lost; the next call reconnects), E_FAIL for a malformed or mismatched response (the client is
 * disabled). The operation's own HRESULT is (*resp)->hresult.
 */
HRESULT mb_client_call(mb_client *client, mb_request *req, mb_response **resp);

/* mb_client_call, also telling the id of the nng pipe that carried the reply (Hello needs it). */
HRESULT mb_client_call_via(mb_client *client, mb_request *req, mb_response **resp,
			   uint32_t *pipe_id);

/* Like mb_client_call, returns the operation's HRESULT, recording the broker's detail text. */
HRESULT mb_client_call_simple(mb_client *client, mb_request *req);

/* A call on a slot the caller keeps (the notification thread's long poll), with a timeout in ms;
 * pipe_id may be NULL. */
HRESULT mb_client_call_on(mb_client *client, mb_call_slot *slot, mb_request *req,
			  mb_response **resp, int timeout_ms, uint32_t *pipe_id);

/* A fresh slot (context + aio), or NULL. Free with mb_client_slot_free. */
mb_call_slot *mb_client_slot_new(mb_client *client);
void mb_client_slot_free(mb_call_slot *slot);

/* Frees the pooled slots (teardown). */
void mb_client_slots_free(mb_client *client);

#endif
