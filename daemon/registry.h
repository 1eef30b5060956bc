/*
 * registry.h: the index of the broker's sessions: by connection (nng pipe id) and by session id.
 *
 * Data only; no policy and no I/O. Lock contract: every function runs with the broker lock held
 * (the registry is part of the broker's state, see state.h).
 */
#ifndef MB_REGISTRY_H
#define MB_REGISTRY_H

#include <stdint.h>

#include <bsd/sys/tree.h>

#include "session.h"

RB_HEAD(mb_session_pipe_tree, mb_session);
RB_HEAD(mb_session_id_tree, mb_session);

typedef struct mb_registry {
	struct mb_session_pipe_tree by_pipe;
	struct mb_session_id_tree by_id;
	uint32_t sessions; /* connections */
	uint32_t clients;  /* connections that completed Hello */
	uint64_t next_id;  /* session ids are never reused while the broker runs */
} mb_registry;

void mb_registry_init(mb_registry *r);

/* Adds a connection's session. 0, or -EEXIST when pipe_id is known already. */
int mb_registry_add(mb_registry *r, mb_session *s);

/* Gives s its session id (at Hello) and indexes it by that id. */
void mb_registry_name(mb_registry *r, mb_session *s);

/* Takes s out of both indexes (it is not freed). */
void mb_registry_remove(mb_registry *r, mb_session *s);

mb_session *mb_registry_by_pipe(const mb_registry *r, uint32_t pipe_id);
mb_session *mb_registry_by_id(const mb_registry *r, uint64_t id);

/* Every session, in pipe order: for (s = first; s; s = next(s)). */
mb_session *mb_registry_first(const mb_registry *r);
mb_session *mb_registry_next(const mb_session *s);

/* Sessions of one uid (the per-uid connection limit). */
uint32_t mb_registry_count_uid(const mb_registry *r, uid_t uid);

#endif
