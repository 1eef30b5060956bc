/*
 * dispatch.h: decoding a request and running it against the broker's state.
 */
#ifndef MB_DISPATCH_H
#define MB_DISPATCH_H

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

#endif
