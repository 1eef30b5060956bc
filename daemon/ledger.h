/*
 * ledger.h: the budget and the per-level ceilings: pure policy, no I/O, no locking (the broker's
 * lock protects it).
 *
 * Invariant kept by the broker: committed == sum of all sessions' committed bytes <= budget.
 */
#ifndef MB_LEDGER_H
#define MB_LEDGER_H

#include <stdbool.h>
#include <stdint.h>

#define MB_LEVELS 3

typedef struct mb_ledger {
	uint64_t budget;    /* bytes */
	uint64_t committed; /* bytes, all sessions */
	uint32_t
	    ceiling_permille[MB_LEVELS]; /* share of the budget each level may bring the total to */
	uint32_t wait_ms[MB_LEVELS];	 /* how long a commit at each level may wait for memory */
} mb_ledger;

/* Budget in bytes; ceilings 90% / 97% / 100% and waits 0 / 250 ms / 2 s for task / AppDomain /
 * process critical. */
void mb_ledger_init(mb_ledger *l, uint64_t budget);

/* Bytes the total may reach for a commit at level (0..2); 0 for an invalid level. */
uint64_t mb_ledger_ceiling(const mb_ledger *l, int level);

/* true when committing bytes more at level keeps the total within the level's ceiling. */
bool mb_ledger_fits(const mb_ledger *l, int level, uint64_t bytes);

/* What else limits a commit besides the level's ceiling: the client's and its group's quotas, and
 * the reserves of other groups, which this client may not eat into. */
typedef struct mb_quota_view {
	uint64_t client_committed, client_max; /* max 0: no limit */
	uint64_t group_committed, group_max;   /* max 0: no limit (or no group) */
	uint64_t others_reserve_unused;	       /* other groups' reserve not yet committed by them */
} mb_quota_view;

typedef enum mb_fit {
	MB_FIT_OK,
	MB_FIT_CEILING,	   /* the level's share of the budget (less others' reserves) is used up */
	MB_FIT_CLIENT_MAX, /* the client's own limit */
	MB_FIT_GROUP_MAX,  /* the group's limit */
} mb_fit;

/* Whether bytes more at level fit; q may be NULL (no quotas). Quotas are checked first: waiting
 * does not help a client over its own limit. */
mb_fit mb_ledger_check(const mb_ledger *l, int level, uint64_t bytes, const mb_quota_view *q);

/* Books a grant (the caller checked mb_ledger_fits) and a return. A refund never takes the total
 * below 0. */
void mb_ledger_charge(mb_ledger *l, uint64_t bytes);
void mb_ledger_refund(mb_ledger *l, uint64_t bytes);

/* Percentage of the budget committed, 0..100 (rounded up, so any use shows as at least 1). */
uint32_t mb_ledger_load(const mb_ledger *l);

/* Bytes a commit at level could get now (its ceiling minus the total, or 0). */
uint64_t mb_ledger_available(const mb_ledger *l, int level);

/*
 * Memory pressure as EMemoryAvailable (1 Low, 2 Neutral, 3 High), with hysteresis so the level does
 * not flap around a threshold: Low while anything waits for memory or from 90% of the budget
 * committed until below 80%; High below 50% until 60% or more; Neutral between. current 0 means
 * no previous level.
 */
int mb_pressure_next(int current, const mb_ledger *l, bool waiters);

/* Commit credit is granted only while the total (credit included) stays under this share of the
 * budget, and under the task ceiling: well before Low, so credit is never what causes pressure. */
#define MB_CREDIT_LIMIT_PERMILLE 800

/*
 * Commit credit to add for a session that holds `held` bytes of credit (unused or not yet reported)
 * when the broker grants up to `target` per session: the difference, rounded down to whole pages
 * and cut to what keeps the total under MB_CREDIT_LIMIT_PERMILLE of the budget and under the task
 * ceiling. 0 while anything waits for memory (credit would compete with it) or target is 0.
 */
uint64_t mb_ledger_credit_grant(const mb_ledger *l, uint64_t held, uint64_t target, bool waiters);

/*
 * The same for credit only commits at level (1 or 2) and above may use: cut to what keeps the
 * total under that level's ceiling instead (level 0 is mb_ledger_credit_grant). Unused credit is
 * taken back before any commit is refused or made to wait, so this headroom stays the level's.
 */
uint64_t mb_ledger_credit_grant_at(const mb_ledger *l, int level, uint64_t held, uint64_t target,
				   bool waiters);

/* The total under which credit is granted for commits at any level (the task rule). */
uint64_t mb_ledger_credit_limit(const mb_ledger *l);

#endif
