/*
 * arbiter.h: what the broker does when memory is short: the decision loop for a commit (decide.h
 * with its steps carried out), waiting commits and their grants, reclaim of MEM_RESET pages, and
 * memory-pressure notifications.
 *
 * Above the books and commit credit, beneath the broker's entry points and the request path.
 * Lock contract: every function here runs with the broker lock held and never takes it.
 */
#ifndef MB_ARBITER_H
#define MB_ARBITER_H

#include <stdbool.h>
#include <stdint.h>

#include "decide.h"
#include "state.h"

/*
 * Decides a commit of `bytes` more at level for s (decide.h), carrying out the steps it asks for
 * (taking unused credit back, reclaiming MEM_RESET pages) until it grants, parks or refuses.
 * waiting: s's commit is already parked (the grant pass); parkable: a new request that may be
 * parked. Grants nothing itself: on MB_VERDICT_GRANT the caller commits the pages.
 */
mb_decision mb_arbiter_decide(mb_broker *b, mb_section *s, int level, uint64_t bytes, bool waiting,
			      bool parkable);

/*
 * mb_arbiter_decide for committing the pages of pr, measured as its pages not committed yet. The
 * reclaim it may carry out can discard MEM_RESET pages of this very range, which the commit then
 * has to charge too: it is decided again until the grant covers what the pages cost.
 */
mb_decision mb_arbiter_decide_pages(mb_broker *b, mb_section *s, int level, const mb_page_range *pr,
				    bool waiting, bool parkable);

/* Parks p (kind, and for a commit address/size/level, set by the caller), answered on connection
 * pipe_id, until at most
 * ms from now, and arms its owner. */
void mb_arbiter_park(mb_broker *b, mb_parked *p, uint32_t pipe_id, uint64_t request_id,
		     uint32_t ms);

/* Finishes a parked request: result and detail set, removed from its queue, owner woken. */
void mb_arbiter_finish(mb_broker *b, mb_parked *p, HRESULT hr, const char *detail);

/* Serves waiting commits that fit now (highest level first, then oldest; none blocks another),
 * then recomputes the pressure. Called after every refund. */
void mb_arbiter_grant_waiters(mb_broker *b);

/* Recomputes the pressure level from memory in use; wakes watchers when it changed. */
void mb_arbiter_update_pressure(mb_broker *b);

/*
 * Chunks of page state (4 KiB per 16 MiB of a reservation) a section may hold without a committed
 * page in them. A discarded page keeps its chunk while nothing is charged for it any more, so the
 * broker's memory for them is bounded here rather than by the budget: at the bound, reclaim
 * leaves the section's reset pages whose discard would idle one more chunk committed and charged.
 * 256 chunks: 1 MiB of broker memory per section, 4 GiB of contiguous discarded address space.
 */
#define MB_SECTION_MAX_IDLE_CHUNKS 256

/* Discards MEM_RESET pages until `need` bytes more would fit for s at level, lowest-level owners
 * first (within MB_SECTION_MAX_IDLE_CHUNKS per section). Returns the bytes refunded. */
uint64_t mb_arbiter_reclaim(mb_broker *b, const mb_section *s, uint64_t need, int level);

/* Queues a MEM_RESET range of s for reclaim (bounded per session: later ones are not queued). */
void mb_arbiter_queue_reset(mb_broker *b, mb_section *s, const mb_page_range *pr);

/* Answers the parked requests of connection pipe_id: waiting commits HOST_E_ABANDONED, and with
 * watches (the connection itself is going away) the watches their level. A connection that
 * lives on without its section keeps its watches: they are about the broker's pressure, not the
 * section, and answering them at once sends replies the client may no longer wait for (a client
 * that says Goodbye while its long poll is out and closes its socket at once; nng 1.5.2 can hang
 * in that close). */
void mb_arbiter_drop_conn(mb_broker *b, uint32_t pipe_id, bool watches);

/* Forgets s's MEM_RESET ranges (it is being freed). */
void mb_arbiter_drop_section(mb_broker *b, mb_section *s);

/* Ends one parked request as its deadline does (a commit: HOST_E_TIMEOUT, counted and logged; a
 * watch: answered with the current level). No-op unless it waits. */
void mb_arbiter_expire_parked(mb_broker *b, mb_parked *p);

/* Expires every parked request due at or before now; returns the earliest deadline still
 * pending, or 0 for none. */
uint64_t mb_arbiter_expire(mb_broker *b, uint64_t now);

/* Answers every waiting commit HOST_E_ABANDONED and every watch its level; nothing waits from
 * now on (b->stopping). Returns how many were parked. */
uint32_t mb_arbiter_abandon_all(mb_broker *b);

/* Requests still parked (waiting commits and watches). */
uint32_t mb_arbiter_parked(const mb_broker *b);

#endif
