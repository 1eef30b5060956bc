/*
 * mb_wire.h: the wire helpers, shared by broker and client. Requests and responses are the
 * protobuf-c messages of proto/membroker.proto, one per nng message body.
 *
 * Decoding is defensive: a body that protobuf-c cannot decode, that has no operation set, or whose
 * strings and tokens exceed their limits is rejected (NULL), so handlers only ever see well-formed
 * envelopes. Field values (addresses, sizes, levels) are checked by the handlers, with the Win32
 * rules.
 *
 * An unpacked message belongs to the thread that unpacked it: only that thread may free it (see
 * mb_wire_unpack_request). The broker's dispatch and self-probe and the library's calls all free
 * a message on the thread that received it, before that thread waits for the next one.
 */
#ifndef MB_WIRE_H
#define MB_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include <nng/nng.h>

#include "membroker.pb-c.h"

typedef Membroker__V1__Request mb_request;
typedef Membroker__V1__Response mb_response;

/* Largest message either side accepts (NNG_OPT_RECVMAXSZ); real messages are under 200 bytes
 * (a full Sync is under 2 KiB, an AdoptDone reply of MB_WIRE_MAX_REFUSED ranges too). */
#define MB_WIRE_MAX_MESSAGE 4096
/* Longest client name kept, in bytes. */
#define MB_WIRE_MAX_NAME 255
/* Length of the one-time fd socket token. */
#define MB_WIRE_TOKEN_LEN 16
/* Longest detail text in a response. */
#define MB_WIRE_MAX_DETAIL 512
/* Most local commits one Sync reports: 64 entries pack to under 2 KiB. */
#define MB_WIRE_MAX_SYNC 64
/* Most local frees one Sync reports (a full Sync, all three lists, stays under 4 KiB packed). */
#define MB_WIRE_MAX_SYNC_FREES 32
/* Most refused ranges one AdoptDone reply lists (packed well under 2 KiB); the client asks again
 * for the rest. */
#define MB_WIRE_MAX_REFUSED 64

/*
 * Packs msg into the body of *out (a fresh nng message when *out is NULL, else cleared and reused).
 * Returns 0 or an nng error code; on error a message allocated here is freed and *out is unchanged.
 */
int mb_wire_pack_request(const mb_request *req, nng_msg **out);
int mb_wire_pack_response(const mb_response *resp, nng_msg **out);

/*
 * Decodes and checks a body. Returns a message to free with mb_wire_free_*, or NULL when the bytes
 * are not a well-formed envelope (undecodable, no operation, over-long name or detail, wrong token
 * length, an HRESULT the protocol does not use).
 *
 * A message must be freed on the thread that unpacked it, and before that thread exits: the first
 * message a thread holds lives in that thread's own buffer (no heap allocation), which the next
 * unpack on the thread reuses once it is freed. A thread may hold several messages at once; those
 * unpacked while another is held come from the heap, and each free releases the right one.
 */
mb_request *mb_wire_unpack_request(const void *data, size_t len);
mb_response *mb_wire_unpack_response(const void *data, size_t len);
void mb_wire_free_request(mb_request *req);
void mb_wire_free_response(mb_response *resp);

/*
 * nng_dial(sock, url, NULL, 0), repeated for up to timeout_ms while the broker's listen queue is
 * full (NNG_EAGAIN: a burst or a flood of connections, which the broker drains in microseconds
 * each). Any other outcome is returned at once.
 */
int mb_wire_dial(nng_socket sock, const char *url, int timeout_ms);

/* Name of a request's operation, for logs ("commit"); "invalid" for an unknown case. */
const char *mb_wire_op_name(int body_case);

#endif
