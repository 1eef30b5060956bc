/*
 * ledger.c: budget arithmetic, overflow-safe.
 */
#include "ledger.h"

#include <stddef.h>

void mb_ledger_init(mb_ledger *l, uint64_t budget)
{
	l->budget = budget;
	l->committed = 0;
	l->ceiling_permille[0] = 900;
	l->ceiling_permille[1] = 970;
	l->ceiling_permille[2] = 1000;
	l->wait_ms[0] = 0;
	l->wait_ms[1] = 250;
	l->wait_ms[2] = 2000;
}

/* permille of budget, rounded down; split to avoid overflowing budget * 1000 near 2^64. */
static uint64_t share_of(uint64_t budget, uint64_t permille)
{
	return budget / 1000 * permille + budget % 1000 * permille / 1000;
}

uint64_t mb_ledger_ceiling(const mb_ledger *l, int level)
{
	if (level < 0 || level >= MB_LEVELS)
		return 0;
	return share_of(l->budget, l->ceiling_permille[level]);
}

bool mb_ledger_fits(const mb_ledger *l, int level, uint64_t bytes)
{
	uint64_t ceiling = mb_ledger_ceiling(l, level);
	if (ceiling > l->budget)
		ceiling = l->budget;
	return l->committed <= ceiling && bytes <= ceiling - l->committed;
}

void mb_ledger_charge(mb_ledger *l, uint64_t bytes)
{
	l->committed += bytes;
}

void mb_ledger_refund(mb_ledger *l, uint64_t bytes)
{
	l->committed = bytes > l->committed ? 0 : l->committed - bytes;
}

uint32_t mb_ledger_load(const mb_ledger *l)
{
	if (l->budget == 0)
		return 100;
	if (l->committed >= l->budget)
		return 100;
	/* committed < budget, so the quotient is < 100; ceil via the remainder. */
	unsigned __int128 c = (unsigned __int128)l->committed * 100;
	uint64_t pct = (uint64_t)(c / l->budget) + (c % l->budget != 0);
	return (uint32_t)pct;
}

uint64_t mb_ledger_available(const mb_ledger *l, int level)
{
	uint64_t ceiling = mb_ledger_ceiling(l, level);
	return ceiling > l->committed ? ceiling - l->committed : 0;
}

int mb_pressure_next(int current, const mb_ledger *l, bool waiters)
{
	enum { LOW = 1, NEUTRAL = 2, HIGH = 3 };
	uint64_t permille;

	if (waiters)
		return LOW;
	permille =
	    l->budget == 0 ? 1000 : (uint64_t)((unsigned __int128)l->committed * 1000 / l->budget);
	if (permille >= 900)
		return LOW;
	switch (current) {
	case LOW:
		if (permille >= 800)
			return LOW;
		return permille < 500 ? HIGH : NEUTRAL;
	case HIGH:
		return permille < 600 ? HIGH : NEUTRAL;
	default:
		return permille < 500 ? HIGH : NEUTRAL;
	}
}

mb_fit mb_ledger_check(const mb_ledger *l, int level, uint64_t bytes, const mb_quota_view *q)
{
	uint64_t held = 0;

	if (q != NULL) {
		if (q->client_max != 0 && (q->client_committed > q->client_max ||
					   bytes > q->client_max - q->client_committed))
			return MB_FIT_CLIENT_MAX;
		if (q->group_max != 0 && (q->group_committed > q->group_max ||
					  bytes > q->group_max - q->group_committed))
			return MB_FIT_GROUP_MAX;
		held = q->others_reserve_unused;
	}
	if (bytes > UINT64_MAX - held)
		return MB_FIT_CEILING;
	return mb_ledger_fits(l, level, bytes + held) ? MB_FIT_OK : MB_FIT_CEILING;
}

uint64_t mb_ledger_credit_limit(const mb_ledger *l)
{
	uint64_t limit = share_of(l->budget, MB_CREDIT_LIMIT_PERMILLE);
	uint64_t task = mb_ledger_ceiling(l, 0);

	return task < limit ? task : limit;
}

uint64_t mb_ledger_credit_grant(const mb_ledger *l, uint64_t held, uint64_t target, bool waiters)
{
	return mb_ledger_credit_grant_at(l, 0, held, target, waiters);
}

uint64_t mb_ledger_credit_grant_at(const mb_ledger *l, int level, uint64_t held, uint64_t target,
				   bool waiters)
{
	const uint64_t page = 4096;
	uint64_t limit;
	uint64_t want;

	if (waiters || target == 0 || held >= target || level < 0 || level >= MB_LEVELS)
		return 0;
	limit = level == 0 ? mb_ledger_credit_limit(l) : mb_ledger_ceiling(l, level);
	if (l->committed >= limit)
		return 0;
	want = target - held;
	if (want > limit - l->committed)
		want = limit - l->committed;
	return want & ~(page - 1);
}
