/*
 * broker.h: the broker's entry points: connection lifecycle, the section hand-over, and the
 * operations the server's threads (the waker, the audit tick, the admin channel, the death watch)
 * run against the state (state.h).
 *
 * Lock contract: every function here takes b->lock for its whole (short) duration unless it says
 * "caller holds the lock", and never does blocking I/O under it (memfd hole punches, fstat/lseek of
 * the audit and pidfd polls are the only system calls made while holding it). Never called with
 * the lock held, and never calls into nng with it held.
 */
#ifndef MB_BROKER_H
#define MB_BROKER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "membroker.h"
#include "state.h"

/* Initialises an empty broker with a budget in bytes. Returns 0 or -errno. */
int mb_broker_init(mb_broker *b, uint64_t budget);

/* Ends every section and connection and frees the state. */
void mb_broker_fini(mb_broker *b);

/* Frees the detached sections whose process exited (a backstop for the death watch), and forgets
 * the connections without a section whose process exited (nng does not always report their end).
 * Run once a second by the main thread. */
void mb_broker_sweep_exited(mb_broker *b);

/* Connections, and live sections, one non-root uid may hold when the configuration does not say
 * (sessions_per_uid bounds both). */
#define MB_DEFAULT_SESSIONS_PER_UID 1024

/* A connection arrived (nng pipe added) with the peer's credentials. 0, -ENOMEM, -EEXIST,
 * -EMFILE when the uid holds its limit of connections (root has none), or -ENOTCONN when the
 * pipe's end was reported already (nng does not order the two events). */
int mb_broker_connect(mb_broker *b, uint32_t pipe_id, pid_t pid, uid_t uid, gid_t gid);

/* The owner of section_id exited (its pidfd fired): the section is freed now, attached or not, even
 * if a forked child still holds the socket (the connection itself closes when the socket does). */
void mb_broker_process_exited(mb_broker *b, uint64_t section_id);

/* A connection is gone. Its parked requests are answered; its section is detached (kept whole and
 * charged for a re-attach) when the owner process lives, else freed. No-op if unknown. */
void mb_broker_disconnect(mb_broker *b, uint32_t pipe_id);

/*
 * For the request path, caller holds the lock:
 *
 * mb_broker_open_section: Hello on connection c: a new section for c's peer (memfd, pidfd in the
 * death watch, fd token, attach token), attached to c. 0, or -EMFILE (the uid holds its limit of
 * sections), -ENOMEM, or another -errno from the memfd.
 *
 * mb_broker_end_section: frees s now (goodbye, offences, death): its connection's parked requests
 * are answered, its pages punched, its charge refunded, waiters served.
 */
int mb_broker_open_section(mb_broker *b, mb_conn *c, const char *name, mb_section **out);

/* Re-attach (caller holds the lock): connection c's peer asks for section id back with token.
 * Granted only when the token is the section's current attach token (compared in constant time)
 * and the peer is the section's own process (uid and pid); then the section is attached to c (a
 * connection it was still attached to, which its client gave up as lost, loses it and its parked
 * requests end) and gets a new attach token (each works once). 0, or -EPERM; a refusal changes
 * nothing and burns nothing (the token is 128 random bits; refusals are logged rate-limited). */
int mb_broker_attach(mb_broker *b, mb_conn *c, uint64_t id, const uint8_t *token, size_t len,
		     mb_section **out);
void mb_broker_end_section(mb_broker *b, mb_section *s, const char *why);

/*
 * Hands the section of session_id to a process that presents the session's one-time token and has
 * the session's uid and pid (from SO_PEERCRED on the fd socket). Returns a new descriptor of the
 * section for the caller to send and close, or -EPERM (unknown session, wrong or used token,
 * different uid or pid), -EMFILE.
 */
int mb_broker_handover(mb_broker *b, uint64_t session_id, const uint8_t *token, size_t token_len,
		       uid_t uid, pid_t pid);

/*
 * Takes a client's section back after a broker restart: the client presents the session's one-time
 * token (same checks as mb_broker_handover) and the memfd it has mapped. The descriptor must be a
 * sealed section of the right size (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL, no write seals); it
 * replaces the session's fresh section, so the broker can audit and discard the client's existing
 * memory again. Returns 0 (the broker owns fd) or -EPERM / -EINVAL (the caller closes fd).
 *
 * Adoption cannot lie: the memfd gains its owner nothing. The commits it re-registers are claims,
 * booked at AdoptDone (or MB_ADOPT_DEADLINE_MS after the hand-over) through the same budget and
 * quota decision as any commit at their level, what the section holds first (readopt.h); what
 * does not fit is punched out and refused, and then the section is audited like any other (pages
 * no commit covers are discarded).
 */
int mb_broker_adopt_section(mb_broker *b, uint64_t session_id, const uint8_t *token,
			    size_t token_len, uid_t uid, pid_t pid, int fd);

/*
 * Applies a configuration's limits and groups (budget, ceilings and waits are the caller's): every
 * session is matched again. Waiting commits that now fit are granted.
 */
void mb_broker_apply_config(mb_broker *b, const mb_config *conf);

/* Sets the budget (set-budget); refused (-EBUSY, *in_use set) below the memory in use. Waiting
 * commits that now fit are granted. */
int mb_broker_set_budget(mb_broker *b, uint64_t bytes, uint64_t *old, uint64_t *in_use);

/*
 * Shutting down: every waiting commit and watch is answered HOST_E_ABANDONED / the current level,
 * and no new request waits. Returns the number of requests that were parked.
 */
uint32_t mb_broker_abandon_all(mb_broker *b);

/*
 * Stopping with systemd's descriptor store, so that the next broker restores the books exactly:
 * every waiting commit is answered HOST_E_ABANDONED (its client sees the stop, as without a
 * store), the broker is frozen (from now on every request is answered HOST_E_CLRNOTAVAILABLE and
 * changes nothing; the client keeps its attach token and re-attaches to the next broker), and the
 * books are encoded (snapshot.h) into *snapshot (malloc'd), all under one hold of the lock, so the
 * snapshot is exactly the books the next broker takes over. 0 or -ENOMEM (then nothing is
 * encoded, but the broker is frozen all the same).
 */
int mb_broker_freeze(mb_broker *b, uint64_t configured_budget, uint8_t **snapshot, size_t *len,
		     uint32_t *abandoned);

/*
 * Finishes every parked request whose deadline is at or before now (commits: HOST_E_TIMEOUT,
 * watches: the current level). Returns the earliest deadline still pending, or 0 for none.
 */
uint64_t mb_broker_expire(mb_broker *b, uint64_t now);

/* Requests still parked (waiting commits and watches). */
uint32_t mb_broker_parked(mb_broker *b);

/*
 * Honest charging (audit.h) of every session, then waiters are granted; offenders that reached
 * MB_MAX_OFFENCES are banned and their connections closed (outside the lock). Returns the bytes
 * discarded. Called on a timer.
 */
uint64_t mb_broker_audit(mb_broker *b);

/* Charged bytes of all sessions, summed from their records (for ledger checks in tests). */
uint64_t mb_broker_sum_sessions(mb_broker *b);

/* Memory in use (credit.h) and the budget, read together (the systemd STATUS= line). */
void mb_broker_usage(mb_broker *b, uint32_t *clients, uint64_t *in_use, uint64_t *budget,
		     uint32_t *waiting);

/* true once the process behind pidfd has exited (or the pidfd cannot be polled). */
bool mb_pidfd_exited(int pidfd);

/* true if pid is banned (and still the same, live process). Prunes exited entries. Caller holds
 * the lock. */
bool mb_broker_banned(mb_broker *b, pid_t pid);

#endif
