/*
 * broker.h: the broker's state: the ledger and the sessions, behind one lock.
 *
 * Every entry point takes b->lock for its whole duration and never does blocking I/O under it
 * (memfd hole punches are the only system calls made while holding it). Handlers run on nng's
 * worker threads, the fd hand-over on its own thread, connects and disconnects on nng's pipe
 * callbacks.
 */
#ifndef MB_BROKER_H
#define MB_BROKER_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include "ledger.h"
#include "session.h"

RB_HEAD(mb_session_pipe_tree, mb_session);
RB_HEAD(mb_session_id_tree, mb_session);

typedef struct mb_broker {
	pthread_mutex_t lock;
	mb_ledger ledger;
	struct mb_session_pipe_tree by_pipe;
	struct mb_session_id_tree by_id;
	uint32_t sessions;
	uint64_t next_session_id;
	uint64_t section_size;    /* size of every section (the top of usable client addresses) */
	uint64_t requests;        /* handled, including refused */
	uint64_t protocol_errors; /* undecodable requests (their connections were closed) */
} mb_broker;

/* Initialises an empty broker with a budget in bytes. Returns 0 or -errno. */
int mb_broker_init(mb_broker *b, uint64_t budget);

/* Ends every session and frees the state. */
void mb_broker_fini(mb_broker *b);

/* A connection arrived (nng pipe added) with the peer's credentials. 0, -ENOMEM or -EEXIST. */
int mb_broker_connect(mb_broker *b, uint32_t pipe_id, pid_t pid, uid_t uid, gid_t gid);

/* A connection is gone: the session and everything it held are released at once. No-op if unknown. */
void mb_broker_disconnect(mb_broker *b, uint32_t pipe_id);

/*
 * Hands the section of session_id to a process that presents the session's one-time token and has
 * the session's uid and pid (from SO_PEERCRED on the fd socket). Returns a new descriptor of the
 * section for the caller to send and close, or -EPERM (unknown session, wrong or used token,
 * different uid or pid), -EMFILE.
 */
int mb_broker_handover(mb_broker *b, uint64_t session_id, const uint8_t *token, size_t token_len,
		       uid_t uid, pid_t pid);

/* Committed bytes of all sessions, summed from their maps (for ledger checks in tests). */
uint64_t mb_broker_sum_sessions(mb_broker *b);

/* For dispatch.c, with b->lock held: */
mb_session *mb_broker_find_pipe(mb_broker *b, uint32_t pipe_id);
void mb_broker_register_id(mb_broker *b, mb_session *s); /* assigns s->id, indexes it */
mb_session *mb_broker_first(mb_broker *b);
mb_session *mb_broker_next(mb_session *s);

#endif /* MB_BROKER_H */
