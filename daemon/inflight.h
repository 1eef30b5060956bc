/*
 * inflight.h: what each connection, and each uid, has in flight in the broker: requests received
 * and not yet answered (being handled, parked as a waiting commit or a Watch, or a reply being
 * sent). A client that never reads its replies, or that floods parked requests, holds request
 * contexts; these bounds stop one client from holding the contexts everyone else needs.
 *
 * Pure bookkeeping without I/O, not thread-safe: the server calls it under its own lock.
 */
#ifndef MB_INFLIGHT_H
#define MB_INFLIGHT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* Requests one connection may have in flight: enough for a client with a thread per core each
 * waiting for memory, and its Watch. */
#define MB_INFLIGHT_PER_PIPE 64
/* Requests all connections of one uid (not root) may have in flight together. */
#define MB_INFLIGHT_PER_UID 512

typedef struct mb_inflight mb_inflight;

/* A new table, or NULL without memory. */
mb_inflight *mb_inflight_new(void);
void mb_inflight_free(mb_inflight *t);

typedef enum {
	MB_INFLIGHT_OK,	       /* counted */
	MB_INFLIGHT_PIPE_FULL, /* the connection is at its bound: not counted */
	MB_INFLIGHT_UID_FULL,  /* the uid is at its bound: not counted */
	MB_INFLIGHT_NOMEM,     /* no memory for the record: not counted */
} mb_inflight_result;

/*
 * One request more on pipe_id, whose peer is uid (root: no uid bound). The uid given with a
 * pipe's first request is kept for it.
 */
mb_inflight_result mb_inflight_add(mb_inflight *t, uint32_t pipe_id, uid_t uid);

/* A request of pipe_id was answered (or dropped). No-op for an unknown pipe. */
void mb_inflight_done(mb_inflight *t, uint32_t pipe_id);

/* Requests in flight on pipe_id, and for uid. */
uint32_t mb_inflight_pipe(const mb_inflight *t, uint32_t pipe_id);
uint32_t mb_inflight_uid(const mb_inflight *t, uid_t uid);

#endif
