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
#include <bsd/sys/queue.h>
#include <sys/types.h>

#include "config.h"
#include "ledger.h"
#include "membroker.h"
#include "mb_win32.h"
#include "session.h"

RB_HEAD(mb_session_pipe_tree, mb_session);
RB_HEAD(mb_session_id_tree, mb_session);

/*
 * A request the broker answers later: a commit waiting for memory, or a Watch long poll. The
 * storage belongs to the caller (the server's context state machine), which supplies two hooks the
 * broker calls with its lock held: arm() tells the caller that a request now waits until
 * p->deadline_ms (the caller must then make sure mb_broker_expire() runs by then); wake() tells it
 * that the outcome is ready and mb_dispatch_finish() should be called soon. Neither hook may call
 * back into the broker or into nng.
 */
enum mb_park_kind { MB_PARK_COMMIT, MB_PARK_WATCH };
enum mb_park_state { MB_PARK_IDLE, MB_PARK_WAITING, MB_PARK_DONE };

typedef struct mb_parked {
	TAILQ_ENTRY(mb_parked) link;
	enum mb_park_kind kind;
	enum mb_park_state state;
	uint32_t pipe_id;
	uint64_t request_id;
	uint64_t address, size; /* commit */
	int level;		/* commit */
	uint32_t last_level;	/* watch */
	uint64_t deadline_ms;	/* CLOCK_MONOTONIC */
	uint64_t seq;		/* arrival order */
	HRESULT result;
	char detail[200];
	void (*arm)(struct mb_parked *p, uint32_t ms);
	void (*wake)(struct mb_parked *p);
	void *owner;
} mb_parked;

TAILQ_HEAD(mb_parked_list, mb_parked);

/* A range a client marked MEM_RESET: what the broker may discard first when memory is short. */
typedef struct mb_reset_range {
	TAILQ_ENTRY(mb_reset_range) link;
	uint32_t pipe_id;
	uint64_t address;
	uint64_t pages;
} mb_reset_range;

TAILQ_HEAD(mb_reset_list, mb_reset_range);

typedef struct mb_broker {
	pthread_mutex_t lock;
	mb_ledger ledger;
	struct mb_session_pipe_tree by_pipe;
	struct mb_session_id_tree by_id;
	uint32_t sessions; /* connections */
	uint32_t clients;  /* connections that completed Hello */
	uint64_t next_session_id;
	uint64_t section_size;	  /* size of every section (the top of usable client addresses) */
	uint64_t requests;	  /* handled, including refused */
	uint64_t protocol_errors; /* undecodable requests (their connections were closed) */

	struct mb_parked_list waiters[MB_LEVELS]; /* commits waiting for memory, oldest first */
	uint32_t nwaiters;
	struct mb_parked_list watchers; /* Watch long polls */
	int pressure;			/* EMemoryAvailable, with hysteresis */
	bool stopping;			/* no new waits; all waits abandoned */
	uint64_t next_seq;

	/* MEM_RESET ranges by the owner's highest commit level, least recently reset first. */
	struct mb_reset_list resets[MB_LEVELS];
	uint64_t reclaimed_bytes;

	uint64_t waits_granted, waits_timed_out, waits_abandoned, refusals;
	uint64_t offences; /* writes to memory that was not committed, all sessions */

	/* Commit credit (credit.c): the sum of the sessions' credit, and what was taken back. */
	uint64_t credit_total;
	uint64_t credit_revocations, credit_revoked_bytes;

	int death_epfd; /* epoll set of the sessions' pidfds (deathwatch.c) */

	/* Processes disconnected for repeated offences: refused until they exit (pidfds). */
	struct {
		pid_t pid;
		int pidfd;
	} banned[64];
	int nbanned;

	/* Sections of connections that closed while their process lives on (a dropped connection
	 * the client will re-establish): kept intact for MB_DETACH_GRACE_MS, so the client's data
	 * survives its reconnection; freed when the process exits or the grace ends. */
	struct {
		int fd, pidfd;
		pid_t pid;
		dev_t dev;
		ino_t ino;
		uint64_t deadline_ms;
	} detached[64];
	int ndetached;

	mb_config conf;				 /* groups and limits in force */
	uint64_t group_committed[MB_MAX_GROUPS]; /* bytes, by conf.groups index */
	uint32_t group_sessions[MB_MAX_GROUPS];

	/* Closes a connection (set by the server; NULL in tests). Never called with the lock held:
	 * nng runs the pipe callbacks, which take the lock, while holding its own locks. */
	void (*close_pipe)(void *arg, uint32_t pipe_id);
	void *close_pipe_arg;
} mb_broker;

/* Initialises an empty broker with a budget in bytes. Returns 0 or -errno. */
int mb_broker_init(mb_broker *b, uint64_t budget);

/* Ends every session and frees the state. */
void mb_broker_fini(mb_broker *b);

/* How long the section of a dropped connection stays intact for its living process to take back
 * (reconnecting clients do so on their next call). Its memory is not charged meanwhile. */
#define MB_DETACH_GRACE_MS 10000

/* Frees the detached sections whose process exited or whose grace ended (the audit's tick). */
void mb_broker_sweep_detached(mb_broker *b);

/* Connections one non-root uid may hold when the configuration does not say. */
#define MB_DEFAULT_SESSIONS_PER_UID 1024

/* A connection arrived (nng pipe added) with the peer's credentials. 0, -ENOMEM, -EEXIST, or
 * -EMFILE when the uid holds its limit of connections (root has none). */
int mb_broker_connect(mb_broker *b, uint32_t pipe_id, pid_t pid, uid_t uid, gid_t gid);

/* The process behind connection pipe_id exited (its pidfd fired): the session ends now, even if a
 * forked child still holds the socket (the connection itself closes when the socket does). */
void mb_broker_process_exited(mb_broker *b, uint32_t pipe_id);

/* A connection is gone: the session and everything it held are released at once. No-op if unknown.
 */
void mb_broker_disconnect(mb_broker *b, uint32_t pipe_id);

/*
 * Hands the section of session_id to a process that presents the session's one-time token and has
 * the session's uid and pid (from SO_PEERCRED on the fd socket). Returns a new descriptor of the
 * section for the caller to send and close, or -EPERM (unknown session, wrong or used token,
 * different uid or pid), -EMFILE.
 */
int mb_broker_handover(mb_broker *b, uint64_t session_id, const uint8_t *token, size_t token_len,
		       uid_t uid, pid_t pid);

/*
 * Applies a configuration's limits and groups (budget, ceilings and waits are the caller's): every
 * session is matched again. Waiting commits that now fit are granted.
 */
void mb_broker_apply_config(mb_broker *b, const mb_config *conf);

/*
 * Shutting down: every waiting commit and watch is answered HOST_E_ABANDONED / the current level,
 * and no new request waits. Returns the number of requests that were parked.
 */
uint32_t mb_broker_abandon_all(mb_broker *b);

/*
 * Finishes every parked request whose deadline is at or before now (commits: HOST_E_TIMEOUT,
 * watches: the current level). Returns the earliest deadline still pending, or 0 for none.
 */
uint64_t mb_broker_expire(mb_broker *b, uint64_t now);

/* Ends one parked request as its deadline does (a commit: HOST_E_TIMEOUT, counted and logged; a
 * watch: answered with the current level). No-op unless it waits. Caller holds the lock. */
void mb_broker_expire_parked(mb_broker *b, mb_parked *p);

/* Requests still parked (waiting commits and watches). */
uint32_t mb_broker_parked(mb_broker *b);

/*
 * Honest charging: compares each session's allocated section pages with what it committed. Pages
 * written without a commit are discarded and counted as an offence (the third offence closes the
 * connection); pages rewritten after the broker discarded them as MEM_RESET are charged again when
 * the budget allows, else discarded. Returns the bytes discarded. Called on a timer and when memory
 * is short.
 */
uint64_t mb_broker_audit(mb_broker *b);

/* Ends a session's adoption: discards its section's pages that no commit covers (without counting
 * an offence: they are what the previous broker did not see decommitted), then audits as usual.
 * Caller holds the lock. */
void mb_broker_adoption_done(mb_broker *b, mb_session *s);

/*
 * Takes a client's section back after a broker restart: the client presents the session's one-time
 * token (same checks as mb_broker_handover) and the memfd it has mapped. The descriptor must be a
 * sealed section of the right size (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL, no write seals); it
 * replaces the session's fresh section, so the broker can audit and discard the client's existing
 * memory again. Returns 0 (the broker owns fd) or -EPERM / -EINVAL (the caller closes fd).
 */
int mb_broker_adopt_section(mb_broker *b, uint64_t session_id, const uint8_t *token,
			    size_t token_len, uid_t uid, pid_t pid, int fd);

/* Committed bytes of all sessions, summed from their maps (for ledger checks in tests). */
uint64_t mb_broker_sum_sessions(mb_broker *b);

/* For dispatch.c, with b->lock held: */
mb_session *mb_broker_find_pipe(mb_broker *b, uint32_t pipe_id);
void mb_broker_register_id(mb_broker *b, mb_session *s); /* assigns s->id, indexes it */
mb_session *mb_broker_first(mb_broker *b);
mb_session *mb_broker_next(mb_session *s);
/* true once the process behind pidfd has exited (or the pidfd cannot be polled). */
bool mb_pidfd_exited(int pidfd);
/* Refuses future sessions of s's process until it exits (repeated offences). */
void mb_broker_ban(mb_broker *b, const mb_session *s);
/* true if pid is banned (and still the same, live process). Prunes exited entries. */
bool mb_broker_banned(mb_broker *b, pid_t pid);
/* Quota-aware fit of bytes more for session s at level. */
mb_fit mb_broker_fits(mb_broker *b, const mb_session *s, int level, uint64_t bytes);
/* Commits pr's pages for s at level and charges what was not committed yet. Returns the pages
 * newly committed, or -1 (nothing changed) without memory for page state. */
long mb_broker_commit_pages(mb_broker *b, mb_session *s, const mb_page_range *pr, int level);
/* Books bytes to (charge) or from (credit) a session, its group and the ledger together. */
void mb_broker_charge(mb_broker *b, mb_session *s, uint64_t bytes);
void mb_broker_credit(mb_broker *b, mb_session *s, uint64_t bytes);
/* Puts a session in its group per b->conf (at Hello, and after a reload). */
void mb_broker_assign_group(mb_broker *b, mb_session *s);
/* Recomputes the pressure level; wakes watchers when it changed. */
void mb_broker_update_pressure(mb_broker *b);
/* Serves waiting commits that fit now (highest level first, then oldest; none blocks another). */
void mb_broker_grant_waiters(mb_broker *b);
/* Discards MEM_RESET pages until `need` bytes more would fit at level, lowest-level owners first.
 * Returns the bytes credited. */
uint64_t mb_broker_reclaim(mb_broker *b, const mb_session *s, uint64_t need, int level);
/* Finishes a parked request: result and detail set, removed from its queue, owner woken. */
void mb_broker_finish_parked(mb_broker *b, mb_parked *p, HRESULT hr, const char *detail);
uint64_t mb_now_ms(void);

#endif /* MB_BROKER_H */
