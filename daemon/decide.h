/*
 * decide.h: the one decision about a commit that needs memory: grant it, take unused commit credit
 * back, reclaim MEM_RESET pages, park it, or refuse it, and why. Pure: no I/O, no state, no lock.
 *
 * The request path (a new commit) and the waker's grant pass (a parked commit) both run the same
 * loop (arbiter.c, mb_arbiter_decide): measure the fit, ask mb_decide, and while the answer is a
 * step (take credit back, reclaim) carry the step out, note it as done and ask again. So a parked
 * commit is served by reclaim exactly as a new one is, and no rule is written twice.
 */
#ifndef MB_DECIDE_H
#define MB_DECIDE_H

#include <stdbool.h>
#include <stdint.h>

#include "ledger.h"

typedef enum mb_verdict {
	MB_VERDICT_GRANT,	/* it fits: commit the pages */
	MB_VERDICT_TAKE_CREDIT, /* take back the unused credit in the way, then ask again */
	MB_VERDICT_RECLAIM,	/* discard MEM_RESET pages, then ask again */
	MB_VERDICT_PARK,	/* wait for memory (a parked commit: keep waiting) */
	MB_VERDICT_REFUSE,	/* E_OUTOFMEMORY now */
} mb_verdict;

typedef enum mb_reason {
	MB_REASON_NONE,
	MB_REASON_CLIENT_MAX, /* over the client's own limit: waiting would not help */
	MB_REASON_GROUP_MAX,  /* over its group's limit: waiting would not help */
	MB_REASON_BUDGET,     /* the level's share of the budget is used up and it may not wait */
	MB_REASON_TOO_LARGE,  /* more than the level's whole ceiling: it could never fit */
	MB_REASON_STOPPING,   /* the broker is shutting down: nothing waits any more */
} mb_reason;

typedef struct mb_decision_in {
	mb_fit fit;	    /* of the bytes still needed, as things stand now */
	uint64_t bytes;	    /* bytes still needed */
	uint64_t ceiling;   /* the level's ceiling (bytes the total may reach) */
	uint32_t wait_ms;   /* how long the level may wait; 0: never */
	bool waiting;	    /* already parked (the grant pass), not a new request */
	bool parkable;	    /* a new request that may be parked (the caller can answer later) */
	bool stopping;	    /* the broker is shutting down */
	bool credit_in_way; /* unused credit exists that taking back could free for this fit */
	bool credit_taken;  /* ... and it was taken back already in this decision */
	bool reclaimable;   /* MEM_RESET pages exist that reclaim could discard */
	bool reclaimed;	    /* ... and reclaim ran already in this decision */
} mb_decision_in;

typedef struct mb_decision {
	mb_verdict verdict;
	mb_reason reason; /* for MB_VERDICT_REFUSE; MB_REASON_NONE otherwise */
} mb_decision;

/*
 * The rules, in order: a commit that fits is granted. Unused credit goes back before anyone is
 * refused, parked or has MEM_RESET pages discarded for them (it costs nobody data). Over a
 * client's or group's limit is refused (waiting does not help). Short of budget, MEM_RESET pages
 * are discarded next; then a commit larger than its level's ceiling is refused (it could never
 * fit), one whose level does not wait is refused, nothing new waits while the broker stops (and a
 * parked one is abandoned), and otherwise it is parked (a parked one keeps waiting). A new
 * request the caller cannot park is refused as if its level did not wait.
 */
mb_decision mb_decide(const mb_decision_in *in);

/* A short English phrase for a reason ("over the client's limit"), for logs and details. */
const char *mb_reason_text(mb_reason r);

#endif
