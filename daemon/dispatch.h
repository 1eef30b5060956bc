/*
 * dispatch.h: decoding a request and running it against the broker's state.
 */
#ifndef MB_DISPATCH_H
#define MB_DISPATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nng/nng.h>

#include "broker.h"

/*
 * Handles one request body received on connection pipe_id and packs the response into *reply
 * (reusing *reply when it is not NULL). Returns 0 when *reply is ready to send, or -1 when the
 * bytes are not a well-formed request: the caller drops the connection (a protocol violation has
 * no request id to answer to). Never trusts a field: every address, size and level is checked.
 */
int mb_dispatch(mb_broker *b, uint32_t pipe_id, const void *data, size_t len, nng_msg **reply);

#define MB_DISPATCH_REPLY  0  /* *reply is ready to send */
#define MB_DISPATCH_DROP   -1 /* malformed: drop the connection */
#define MB_DISPATCH_PARKED 1  /* the request waits in *park; see mb_dispatch_finish */
#define MB_DISPATCH_NO_SESSION                                                                     \
	2 /* a Hello on a connection not known yet: mb_broker_connect it,                          \
	   * then dispatch again */

/*
 * Like mb_dispatch, but a commit that must wait for memory, or a Watch, is parked in *park (storage
 * of the caller, with arm/wake/owner set and state MB_PARK_IDLE) and MB_DISPATCH_PARKED returned.
 * With park NULL nothing waits: such a commit is refused at once with E_OUTOFMEMORY.
 */
int mb_dispatch_park(mb_broker *b, uint32_t pipe_id, const void *data, size_t len, nng_msg **reply,
		     mb_parked *park);

/*
 * Called by the owner of a parked request once woken (its outcome is ready). With expired = true a
 * request that still waits is ended as if its deadline had passed; with expired = false it is
 * re-armed and MB_DISPATCH_PARKED returned (a spurious wake-up). Otherwise returns
 * MB_DISPATCH_REPLY with *reply packed, and park is idle again.
 */
int mb_dispatch_finish(mb_broker *b, mb_parked *park, bool expired, nng_msg **reply);

#endif
