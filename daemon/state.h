/*
 * state.h: the broker's state, behind one lock: the books, the registry of sections, the requests
 * that wait, the MEM_RESET ranges that may be reclaimed, and the counters shown to operators.
 *
 * Data only. The modules that work on it, bottom to top (none calls a module above it):
 *
 *     ledger, decide          pure policy (budget and ceilings; grant / park / refuse)
 *     memfd, section          a sealed memfd; the record of one client's memory
 *     registry                sections by id, connections by pipe
 *     books                   charge, refund, fits, quotas, group reserve
 *     credit                  commit credit, and memory in use
 *     arbiter, audit          waiting, reclaim, pressure; honest charging
 *     readopt                 claims of a handed-back section and their booking
 *     broker                  connection lifecycle, hand-over, entry points that take the lock
 *     dispatch                one request
 *     server, fdserver, admin, heartbeat, deathwatch, main      threads and I/O
 *
 * Lock contract: b->lock protects everything here. Functions of the modules from registry up to
 * readopt run with it held and never take it; broker.c's entry points and dispatch take it for
 * their whole (short) duration. Nothing calls into nng with it held. Lock order: the broker lock,
 * then the server's waker lock (taken by the parked requests' hooks).
 */
#ifndef MB_STATE_H
#define MB_STATE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <bsd/sys/queue.h>
#include <sys/types.h>

#include "throttle.h"
#include "books.h"
#include "config.h"
#include "ledger.h"
#include "membroker.h"
#include "registry.h"

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
	uint64_t section_id;
	uint64_t address;
	uint64_t pages;
} mb_reset_range;

TAILQ_HEAD(mb_reset_list, mb_reset_range);

typedef struct mb_broker {
	pthread_mutex_t lock;
	mb_books books;		  /* the ledger, groups and quotas */
	mb_registry reg;	  /* sections and connections */
	mb_config conf;		  /* groups and limits in force (books.conf points here) */
	uint64_t section_size;	  /* size of every section (the top of usable client addresses) */
	uint64_t requests;	  /* handled, including refused */
	uint64_t protocol_errors; /* undecodable requests (their connections were closed) */

	struct mb_parked_list waiters[MB_LEVELS]; /* commits waiting for memory, oldest first */
	uint32_t nwaiters;
	struct mb_parked_list watchers; /* Watch long polls */
	int pressure;			/* EMemoryAvailable, with hysteresis */
	bool stopping;			/* no new waits; all waits abandoned */
	bool frozen; /* stopping with a snapshot of the books taken: nothing may change them */
	uint64_t next_seq;

	/* MEM_RESET ranges by the owner's highest commit level, least recently reset first. */
	struct mb_reset_list resets[MB_LEVELS];
	uint64_t reclaimed_bytes;

	uint64_t waits_granted, waits_timed_out, waits_abandoned, refusals;
	uint64_t offences; /* writes to memory that was not committed, all sections */

	int death_epfd; /* epoll set of the sections' owner pidfds, keyed by id (deathwatch.c) */

	/* systemd's descriptor store (fdstore.h): sections are stored when created and removed
	 * when freed. NULL when the broker runs without one (and in tests). */
	struct mb_fdstore *fdstore;

	/* Processes disconnected for repeated offences: refused until they exit (pidfds). */
	struct {
		pid_t pid;
		int pidfd;
	} banned[64];
	int nbanned;
	/* ... and their uids, refused new sessions for a while (throttle.h). */
	mb_throttle throttle;

	/* Closes a connection (set by the server; NULL in tests). Never called with the lock held:
	 * nng runs the pipe callbacks, which take the lock, while holding its own locks. */
	void (*close_pipe)(void *arg, uint32_t pipe_id);
	void *close_pipe_arg;
} mb_broker;

#endif
