/*
 * unit_ledger.c: budget arithmetic and the commit credit policy (daemon/ledger.c), and membrokerd's
 * command line (daemon/options.c).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "ledger.h"
#include "log.h"
#include "options.h"

static const uint32_t permille[MB_LEVELS] = {900, 970, 1000};

/* floor(budget * p / 1000), computed wide. */
static uint64_t exact_ceiling(uint64_t budget, uint32_t p)
{
	return (uint64_t)((unsigned __int128)budget * p / 1000);
}

/* ceil(committed * 100 / budget), capped at 100. */
static uint32_t exact_load(uint64_t committed, uint64_t budget)
{
	unsigned __int128 c = (unsigned __int128)committed * 100;
	unsigned __int128 q = c / budget + (c % budget != 0);
	return q > 100 ? 100 : (uint32_t)q;
}

static const uint64_t budgets[] = {
    0,
    1,
    7,
    999,
    1000,
    1001,
    12345,
    999999,
    64ULL << 20,
    (64ULL << 20) + 1,
    (1ULL << 32) + 1,
    1ULL << 40,
    (1ULL << 63) - 1,
    1ULL << 63,
    UINT64_MAX / 1000 * 1000,
    UINT64_MAX / 1000 * 1000 - 1,
    UINT64_MAX - 999,
    UINT64_MAX - 1,
    UINT64_MAX,
};

#define NBUDGETS (sizeof(budgets) / sizeof(budgets[0]))

/* ---- ceilings ---- */

static void test_init(void **state)
{
	mb_ledger l;

	(void)state;
	memset(&l, 0xa5, sizeof(l));
	mb_ledger_init(&l, 123456789);
	assert_int_equal(l.budget, 123456789);
	assert_int_equal(l.committed, 0);
	for (int i = 0; i < MB_LEVELS; i++)
		assert_int_equal(l.ceiling_permille[i], permille[i]);
}

static void test_ceiling_exact_small(void **state)
{
	mb_ledger l;

	(void)state;
	mb_ledger_init(&l, 1000);
	assert_int_equal(mb_ledger_ceiling(&l, 0), 900);
	assert_int_equal(mb_ledger_ceiling(&l, 1), 970);
	assert_int_equal(mb_ledger_ceiling(&l, 2), 1000);

	/* Odd budgets round down (a ceiling never exceeds its share). */
	mb_ledger_init(&l, 1001);
	assert_int_equal(mb_ledger_ceiling(&l, 0), 900); /* 900.9 */
	assert_int_equal(mb_ledger_ceiling(&l, 1), 970); /* 970.97 */
	assert_int_equal(mb_ledger_ceiling(&l, 2), 1001);
	mb_ledger_init(&l, 7);
	assert_int_equal(mb_ledger_ceiling(&l, 0), 6); /* 6.3 */
	assert_int_equal(mb_ledger_ceiling(&l, 1), 6); /* 6.79 */
	assert_int_equal(mb_ledger_ceiling(&l, 2), 7);
	mb_ledger_init(&l, 12345);
	assert_int_equal(mb_ledger_ceiling(&l, 0), 11110); /* 11110.5 */
	assert_int_equal(mb_ledger_ceiling(&l, 1), 11974); /* 11974.65 */
	assert_int_equal(mb_ledger_ceiling(&l, 2), 12345);
	mb_ledger_init(&l, 1);
	assert_int_equal(mb_ledger_ceiling(&l, 0), 0);
	assert_int_equal(mb_ledger_ceiling(&l, 1), 0);
	assert_int_equal(mb_ledger_ceiling(&l, 2), 1);
	mb_ledger_init(&l, 64ULL << 20);
	assert_int_equal(mb_ledger_ceiling(&l, 0), 60397977); /* 67108864 * 0.9 = 60397977.6 */
	assert_int_equal(mb_ledger_ceiling(&l, 1), 65095598); /* 65095598.08 */
	assert_int_equal(mb_ledger_ceiling(&l, 2), 64ULL << 20);
}

static void test_ceiling_all_budgets(void **state)
{
	mb_ledger l;

	(void)state;
	for (size_t i = 0; i < NBUDGETS; i++) {
		mb_ledger_init(&l, budgets[i]);
		for (int lv = 0; lv < MB_LEVELS; lv++) {
			uint64_t c = mb_ledger_ceiling(&l, lv);
			assert_int_equal(c, exact_ceiling(budgets[i], permille[lv]));
			assert_true(c <= budgets[i]);
		}
		/* Levels are ordered, and process-critical may use everything. */
		assert_true(mb_ledger_ceiling(&l, 0) <= mb_ledger_ceiling(&l, 1));
		assert_true(mb_ledger_ceiling(&l, 1) <= mb_ledger_ceiling(&l, 2));
		assert_int_equal(mb_ledger_ceiling(&l, 2), budgets[i]);
	}
}

static void test_ceiling_near_uint64_max(void **state)
{
	mb_ledger l;

	(void)state;
	/* budget * 900 would overflow 64 bits by far: the split must still be exact. */
	mb_ledger_init(&l, UINT64_MAX);
	assert_int_equal(mb_ledger_ceiling(&l, 0), 16602069666338596453ULL);
	assert_int_equal(mb_ledger_ceiling(&l, 1), 17893341751498265066ULL);
	assert_int_equal(mb_ledger_ceiling(&l, 2), UINT64_MAX);
	assert_int_equal(mb_ledger_available(&l, 2), UINT64_MAX);
}

static void test_ceiling_invalid_level(void **state)
{
	mb_ledger l;

	(void)state;
	mb_ledger_init(&l, 1 << 20);
	assert_int_equal(mb_ledger_ceiling(&l, -1), 0);
	assert_int_equal(mb_ledger_ceiling(&l, MB_LEVELS), 0);
	assert_int_equal(mb_ledger_ceiling(&l, 7), 0);
	assert_int_equal(mb_ledger_ceiling(&l, INT32_MIN), 0);
	assert_int_equal(mb_ledger_available(&l, -1), 0);
	assert_int_equal(mb_ledger_available(&l, 3), 0);
	assert_false(mb_ledger_fits(&l, 3, 1));
	assert_false(mb_ledger_fits(&l, -1, 4096));
}

/* ---- fits / charge / credit ---- */

static void test_fits_boundaries(void **state)
{
	mb_ledger l;

	(void)state;
	mb_ledger_init(&l, 1000);
	assert_true(mb_ledger_fits(&l, 0, 900));
	assert_false(mb_ledger_fits(&l, 0, 901));
	assert_true(mb_ledger_fits(&l, 1, 970));
	assert_false(mb_ledger_fits(&l, 1, 971));
	assert_true(mb_ledger_fits(&l, 2, 1000));
	assert_false(mb_ledger_fits(&l, 2, 1001));
	assert_true(mb_ledger_fits(&l, 0, 0));
	assert_false(mb_ledger_fits(&l, 0, UINT64_MAX));
	assert_false(mb_ledger_fits(&l, 2, UINT64_MAX));

	mb_ledger_charge(&l, 900);
	assert_int_equal(l.committed, 900);
	assert_false(mb_ledger_fits(&l, 0, 1));
	assert_true(mb_ledger_fits(&l, 0, 0));
	assert_true(mb_ledger_fits(&l, 1, 70));
	assert_false(mb_ledger_fits(&l, 1, 71));
	assert_true(mb_ledger_fits(&l, 2, 100));
	assert_false(mb_ledger_fits(&l, 2, 101));

	/* Above a level's ceiling (reached at a higher level): that level gets nothing. */
	mb_ledger_charge(&l, 60);
	assert_int_equal(l.committed, 960);
	assert_false(mb_ledger_fits(&l, 0, 1));
	assert_false(mb_ledger_fits(&l, 0, 0));
	assert_true(mb_ledger_fits(&l, 1, 10));
	assert_false(mb_ledger_fits(&l, 1, 11));
	assert_true(mb_ledger_fits(&l, 2, 40));
	assert_false(mb_ledger_fits(&l, 2, 41));
	/* Huge requests must not wrap around the subtraction. */
	assert_false(mb_ledger_fits(&l, 2, UINT64_MAX));
	assert_false(mb_ledger_fits(&l, 2, UINT64_MAX - 959));

	mb_ledger_charge(&l, 40);
	assert_int_equal(l.committed, 1000);
	assert_false(mb_ledger_fits(&l, 2, 1));
	assert_true(mb_ledger_fits(&l, 2, 0));
}

static void test_fits_near_uint64_max(void **state)
{
	mb_ledger l;

	(void)state;
	mb_ledger_init(&l, UINT64_MAX);
	mb_ledger_charge(&l, UINT64_MAX - 5);
	assert_true(mb_ledger_fits(&l, 2, 5));
	assert_false(mb_ledger_fits(&l, 2, 6));
	assert_false(mb_ledger_fits(&l, 2, UINT64_MAX));
	assert_false(mb_ledger_fits(&l, 0, 1));
	assert_int_equal(mb_ledger_available(&l, 2), 5);
	assert_int_equal(mb_ledger_available(&l, 0), 0);
	assert_int_equal(mb_ledger_load(&l), 100);

	mb_ledger_refund(&l, UINT64_MAX - 5);
	assert_int_equal(l.committed, 0);
	assert_true(mb_ledger_fits(&l, 0, exact_ceiling(UINT64_MAX, 900)));
	assert_false(mb_ledger_fits(&l, 0, exact_ceiling(UINT64_MAX, 900) + 1));
	assert_true(mb_ledger_fits(&l, 2, UINT64_MAX));
}

static void test_fits_every_budget(void **state)
{
	mb_ledger l;

	(void)state;
	for (size_t i = 0; i < NBUDGETS; i++) {
		mb_ledger_init(&l, budgets[i]);
		for (int lv = 0; lv < MB_LEVELS; lv++) {
			uint64_t c = exact_ceiling(budgets[i], permille[lv]);
			assert_true(mb_ledger_fits(&l, lv, c));
			if (c < UINT64_MAX)
				assert_false(mb_ledger_fits(&l, lv, c + 1));
			assert_int_equal(mb_ledger_available(&l, lv), c);
		}
	}
}

static void test_charge_credit(void **state)
{
	mb_ledger l;

	(void)state;
	mb_ledger_init(&l, 1 << 20);
	mb_ledger_charge(&l, 4096);
	mb_ledger_charge(&l, 8192);
	assert_int_equal(l.committed, 12288);
	mb_ledger_charge(&l, 0);
	assert_int_equal(l.committed, 12288);
	mb_ledger_refund(&l, 4096);
	assert_int_equal(l.committed, 8192);
	mb_ledger_refund(&l, 0);
	assert_int_equal(l.committed, 8192);
	mb_ledger_refund(&l, 8192);
	assert_int_equal(l.committed, 0);

	/* Credit never goes below zero. */
	mb_ledger_refund(&l, 1);
	assert_int_equal(l.committed, 0);
	mb_ledger_charge(&l, 100);
	mb_ledger_refund(&l, 101);
	assert_int_equal(l.committed, 0);
	mb_ledger_charge(&l, 100);
	mb_ledger_refund(&l, UINT64_MAX);
	assert_int_equal(l.committed, 0);
	assert_int_equal(l.budget, 1 << 20);
}

/* ---- load ---- */

static void test_load_rounding(void **state)
{
	mb_ledger l;

	(void)state;
	mb_ledger_init(&l, 1000);
	assert_int_equal(mb_ledger_load(&l), 0);
	mb_ledger_charge(&l, 1);
	assert_int_equal(mb_ledger_load(&l), 1); /* 0.1% shows as 1 */
	mb_ledger_charge(&l, 9);
	assert_int_equal(mb_ledger_load(&l), 1); /* exactly 1% */
	mb_ledger_charge(&l, 1);
	assert_int_equal(mb_ledger_load(&l), 2); /* 1.1% */
	mb_ledger_refund(&l, 11);
	mb_ledger_charge(&l, 500);
	assert_int_equal(mb_ledger_load(&l), 50);
	mb_ledger_charge(&l, 1);
	assert_int_equal(mb_ledger_load(&l), 51);
	mb_ledger_charge(&l, 498);
	assert_int_equal(mb_ledger_load(&l), 100); /* 99.9% rounds up */
	mb_ledger_charge(&l, 1);
	assert_int_equal(mb_ledger_load(&l), 100); /* full */
	mb_ledger_refund(&l, 1000);
	assert_int_equal(mb_ledger_load(&l), 0);

	/* One byte of a large budget still shows. */
	mb_ledger_init(&l, 64ULL << 30);
	mb_ledger_charge(&l, 1);
	assert_int_equal(mb_ledger_load(&l), 1);

	/* A zero budget is always full. */
	mb_ledger_init(&l, 0);
	assert_int_equal(mb_ledger_load(&l), 100);
}

static void test_load_every_budget(void **state)
{
	mb_ledger l;

	(void)state;
	for (size_t i = 0; i < NBUDGETS; i++) {
		uint64_t b = budgets[i];
		uint64_t probes[] = {0, 1, b / 3, b / 2, b / 2 + 1, b - (b > 0), b};

		if (b == 0)
			continue;
		for (size_t j = 0; j < sizeof(probes) / sizeof(probes[0]); j++) {
			mb_ledger_init(&l, b);
			mb_ledger_charge(&l, probes[j]);
			assert_int_equal(mb_ledger_load(&l), exact_load(probes[j], b));
		}
		mb_ledger_init(&l, b);
		assert_int_equal(mb_ledger_load(&l), 0);
		mb_ledger_charge(&l, 1);
		assert_int_equal(mb_ledger_load(&l), b <= 100 ? exact_load(1, b) : 1);
		mb_ledger_charge(&l, b - 1);
		assert_int_equal(mb_ledger_load(&l), 100);
	}
	/* Half of UINT64_MAX (odd) is just under 50%: rounds up to 50, no overflow. */
	mb_ledger_init(&l, UINT64_MAX);
	mb_ledger_charge(&l, UINT64_MAX / 2);
	assert_int_equal(mb_ledger_load(&l), 50);
}

/* ---- available ---- */

static void test_available_per_level(void **state)
{
	mb_ledger l;

	(void)state;
	mb_ledger_init(&l, 1000);
	assert_int_equal(mb_ledger_available(&l, 0), 900);
	assert_int_equal(mb_ledger_available(&l, 1), 970);
	assert_int_equal(mb_ledger_available(&l, 2), 1000);
	mb_ledger_charge(&l, 500);
	assert_int_equal(mb_ledger_available(&l, 0), 400);
	assert_int_equal(mb_ledger_available(&l, 1), 470);
	assert_int_equal(mb_ledger_available(&l, 2), 500);
	mb_ledger_charge(&l, 450);
	assert_int_equal(mb_ledger_available(&l, 0), 0);
	assert_int_equal(mb_ledger_available(&l, 1), 20);
	assert_int_equal(mb_ledger_available(&l, 2), 50);
	mb_ledger_charge(&l, 50);
	assert_int_equal(mb_ledger_available(&l, 0), 0);
	assert_int_equal(mb_ledger_available(&l, 1), 0);
	assert_int_equal(mb_ledger_available(&l, 2), 0);

	/* What available says always fits, and one byte more does not. */
	mb_ledger_init(&l, 64ULL << 20);
	mb_ledger_charge(&l, 12345678);
	for (int lv = 0; lv < MB_LEVELS; lv++) {
		uint64_t a = mb_ledger_available(&l, lv);
		assert_int_equal(a, exact_ceiling(64ULL << 20, permille[lv]) - 12345678);
		assert_true(mb_ledger_fits(&l, lv, a));
		assert_false(mb_ledger_fits(&l, lv, a + 1));
	}
}

/* ---- commit credit ---- */

#define KIB4 4096ULL

/* What credit may bring the total to: 80% of the budget, or the task ceiling if that is lower. */
static uint64_t credit_limit(const mb_ledger *l)
{
	uint64_t limit = exact_ceiling(l->budget, MB_CREDIT_LIMIT_PERMILLE);
	uint64_t task = exact_ceiling(l->budget, l->ceiling_permille[0]);

	return task < limit ? task : limit;
}

/* The grant as mb_ledger_credit_grant documents it, computed wide. */
static uint64_t expected_grant(const mb_ledger *l, uint64_t held, uint64_t target, bool waiters)
{
	uint64_t limit = credit_limit(l);
	unsigned __int128 want;

	if (waiters || target == 0 || held >= target || l->committed >= limit)
		return 0;
	want = (unsigned __int128)target - held;
	if (want > (unsigned __int128)limit - l->committed)
		want = (unsigned __int128)limit - l->committed;
	return (uint64_t)want & ~(KIB4 - 1);
}

static void test_credit_grant_target_and_held(void **state)
{
	mb_ledger l;

	(void)state;
	mb_ledger_init(&l, 64ULL << 20);
	assert_int_equal(mb_ledger_credit_grant(&l, 0, 4ULL << 20, false), 4ULL << 20);
	assert_int_equal(mb_ledger_credit_grant(&l, 1ULL << 20, 4ULL << 20, false), 3ULL << 20);
	assert_int_equal(mb_ledger_credit_grant(&l, (4ULL << 20) - KIB4, 4ULL << 20, false), KIB4);
	/* Nothing configured, or already held (a lowered target takes nothing back here). */
	assert_int_equal(mb_ledger_credit_grant(&l, 0, 0, false), 0);
	assert_int_equal(mb_ledger_credit_grant(&l, KIB4, 0, false), 0);
	assert_int_equal(mb_ledger_credit_grant(&l, 4ULL << 20, 4ULL << 20, false), 0);
	assert_int_equal(mb_ledger_credit_grant(&l, 8ULL << 20, 4ULL << 20, false), 0);
	assert_int_equal(mb_ledger_credit_grant(&l, UINT64_MAX, 4ULL << 20, false), 0);
	assert_int_equal(mb_ledger_credit_grant(&l, UINT64_MAX, UINT64_MAX, false), 0);
	/* Pure: the ledger is not charged. */
	assert_int_equal(l.committed, 0);
}

/* Past the task rule, credit for level 1 or 2 commits is cut to that level's ceiling. */
static void test_credit_grant_at_level(void **state)
{
	const uint64_t budget = 64ULL << 20, want = 4ULL << 20;
	mb_ledger l;

	(void)state;
	mb_ledger_init(&l, budget);
	l.committed = 55ULL << 20; /* past 80 %, under the task ceiling */
	assert_int_equal(mb_ledger_credit_grant(&l, 0, want, false), 0);
	assert_int_equal(mb_ledger_credit_grant_at(&l, 0, 0, want, false), 0);
	assert_int_equal(mb_ledger_credit_grant_at(&l, 1, 0, want, false), want);
	assert_int_equal(mb_ledger_credit_grant_at(&l, 2, 0, want, false), want);
	/* Near the AppDomain ceiling: cut to it, in whole pages; the process level has more. */
	l.committed = 61ULL << 20;
	uint64_t app = exact_ceiling(budget, l.ceiling_permille[1]);
	assert_int_equal(mb_ledger_credit_grant_at(&l, 1, 0, want, false),
			 (app - l.committed) & ~(KIB4 - 1));
	assert_int_equal(mb_ledger_credit_grant_at(&l, 2, 0, want, false), 3ULL << 20);
	/* Held, waiters, no target, a level that does not exist: nothing. */
	assert_int_equal(mb_ledger_credit_grant_at(&l, 2, want, want, false), 0);
	assert_int_equal(mb_ledger_credit_grant_at(&l, 2, 0, want, true), 0);
	assert_int_equal(mb_ledger_credit_grant_at(&l, 2, 0, 0, false), 0);
	assert_int_equal(mb_ledger_credit_grant_at(&l, 3, 0, want, false), 0);
	assert_int_equal(mb_ledger_credit_grant_at(&l, -1, 0, want, false), 0);
	l.committed = budget;
	assert_int_equal(mb_ledger_credit_grant_at(&l, 2, 0, want, false), 0);
	assert_int_equal(mb_ledger_credit_limit(&l), credit_limit(&l));
}

static void test_credit_grant_waiters(void **state)
{
	mb_ledger l;

	(void)state;
	mb_ledger_init(&l, 64ULL << 20);
	assert_int_equal(mb_ledger_credit_grant(&l, 0, 4ULL << 20, true), 0);
	assert_int_equal(mb_ledger_credit_grant(&l, 0, KIB4, true), 0);
	mb_ledger_charge(&l, 1ULL << 20);
	assert_int_equal(mb_ledger_credit_grant(&l, 0, 4ULL << 20, true), 0);
	assert_int_equal(mb_ledger_credit_grant(&l, 0, 4ULL << 20, false), 4ULL << 20);
}

static void test_credit_grant_cut_at_80_percent(void **state)
{
	const uint64_t budget = 64ULL << 20;
	const uint64_t limit = 53687091; /* floor(0.8 * 64 MiB) */
	mb_ledger l;

	(void)state;
	mb_ledger_init(&l, budget);
	/* 10 pages and a bit under the limit: the whole pages. */
	l.committed = limit - 10 * KIB4 - 123;
	assert_int_equal(mb_ledger_credit_grant(&l, 0, 4ULL << 20, false), 10 * KIB4);
	assert_int_equal(mb_ledger_credit_grant(&l, 0, 3 * KIB4, false), 3 * KIB4);
	/* Less than a page, none, or past it. */
	l.committed = limit - KIB4 + 1;
	assert_int_equal(mb_ledger_credit_grant(&l, 0, 4ULL << 20, false), 0);
	l.committed = limit - KIB4;
	assert_int_equal(mb_ledger_credit_grant(&l, 0, 4ULL << 20, false), KIB4);
	l.committed = limit;
	assert_int_equal(mb_ledger_credit_grant(&l, 0, 4ULL << 20, false), 0);
	l.committed = limit + 1;
	assert_int_equal(mb_ledger_credit_grant(&l, 0, 4ULL << 20, false), 0);
	/* Above the task ceiling or even the budget (adopted memory): no underflow. */
	l.committed = budget;
	assert_int_equal(mb_ledger_credit_grant(&l, 0, 4ULL << 20, false), 0);
	l.committed = UINT64_MAX;
	assert_int_equal(mb_ledger_credit_grant(&l, 0, UINT64_MAX, false), 0);

	/* Granting repeatedly never takes the total past the limit. */
	l.committed = 0;
	for (int i = 0; i < 100; i++) {
		uint64_t g = mb_ledger_credit_grant(&l, 0, 4ULL << 20, false);
		if (g == 0)
			break;
		assert_int_equal(g % KIB4, 0);
		mb_ledger_charge(&l, g);
		l.committed += 777; /* an odd commit in between */
	}
	assert_true(l.committed <= limit);
	assert_true(limit - l.committed < KIB4);
}

static void test_credit_grant_task_ceiling(void **state)
{
	const uint64_t budget = 64ULL << 20;
	mb_ledger l;

	(void)state;
	mb_ledger_init(&l, budget);
	/* A task ceiling under 80% is where credit stops. */
	l.ceiling_permille[0] = 500;
	assert_int_equal(mb_ledger_credit_grant(&l, 0, budget, false), budget / 2);
	l.committed = budget / 2 - 5 * KIB4;
	assert_int_equal(mb_ledger_credit_grant(&l, 0, budget, false), 5 * KIB4);
	l.committed = budget / 2;
	assert_int_equal(mb_ledger_credit_grant(&l, 0, budget, false), 0);
	l.ceiling_permille[0] = 0;
	l.committed = 0;
	assert_int_equal(mb_ledger_credit_grant(&l, 0, budget, false), 0);
	/* One above 80% does not raise the limit. */
	l.ceiling_permille[0] = 1000;
	assert_int_equal(mb_ledger_credit_grant(&l, 0, budget, false),
			 exact_ceiling(budget, 800) & ~(KIB4 - 1));
	/* The other levels' ceilings play no part. */
	l.ceiling_permille[0] = 900;
	l.ceiling_permille[1] = 100;
	l.ceiling_permille[2] = 100;
	assert_int_equal(mb_ledger_credit_grant(&l, 0, budget, false),
			 exact_ceiling(budget, 800) & ~(KIB4 - 1));
}

static void test_credit_grant_page_rounding(void **state)
{
	mb_ledger l;

	(void)state;
	mb_ledger_init(&l, 64ULL << 20);
	assert_int_equal(mb_ledger_credit_grant(&l, 0, (1ULL << 20) + 100, false), 1ULL << 20);
	assert_int_equal(mb_ledger_credit_grant(&l, 0, KIB4, false), KIB4);
	assert_int_equal(mb_ledger_credit_grant(&l, 0, KIB4 - 1, false), 0);
	assert_int_equal(mb_ledger_credit_grant(&l, 0, 1, false), 0);
	assert_int_equal(mb_ledger_credit_grant(&l, 100, 2 * KIB4, false), KIB4);
	assert_int_equal(mb_ledger_credit_grant(&l, 1, KIB4 + 1, false), KIB4);
	/* A budget too small for one page under 80%: nothing. */
	mb_ledger_init(&l, 5119); /* 80% = 4095 */
	assert_int_equal(mb_ledger_credit_grant(&l, 0, 1ULL << 20, false), 0);
	mb_ledger_init(&l, 5120); /* 80% = 4096 */
	assert_int_equal(mb_ledger_credit_grant(&l, 0, 1ULL << 20, false), KIB4);
}

static void test_credit_grant_budget_zero(void **state)
{
	mb_ledger l;

	(void)state;
	mb_ledger_init(&l, 0);
	assert_int_equal(mb_ledger_credit_grant(&l, 0, 4ULL << 20, false), 0);
	assert_int_equal(mb_ledger_credit_grant(&l, 0, UINT64_MAX, false), 0);
	assert_int_equal(mb_ledger_credit_grant(&l, 0, KIB4, false), 0);
}

static void test_credit_grant_near_uint64_max(void **state)
{
	mb_ledger l;

	(void)state;
	/* 80% of 2^64 - 1 is exact (it is a multiple of 5); then whole pages. */
	mb_ledger_init(&l, UINT64_MAX);
	assert_int_equal(mb_ledger_credit_grant(&l, 0, UINT64_MAX, false), 0xccccccccccccc000ULL);
	assert_int_equal(mb_ledger_credit_grant(&l, UINT64_MAX - 1, UINT64_MAX, false), 0);
	assert_int_equal(mb_ledger_credit_grant(&l, 1, UINT64_MAX, false), 0xccccccccccccc000ULL);
	assert_int_equal(mb_ledger_credit_grant(&l, 0, 4ULL << 20, false), 4ULL << 20);
	l.committed = 0xccccccccccccc000ULL;
	assert_int_equal(mb_ledger_credit_grant(&l, 0, UINT64_MAX, false), 0);
	l.committed = 0xccccccccccccc000ULL - KIB4;
	assert_int_equal(mb_ledger_credit_grant(&l, 0, UINT64_MAX, false), KIB4);
	l.committed = UINT64_MAX;
	assert_int_equal(mb_ledger_credit_grant(&l, 0, UINT64_MAX, false), 0);
}

/* Every budget, against the wide reference, at totals around the limit. */
static void test_credit_grant_every_budget(void **state)
{
	static const uint64_t helds[] = {0, 1, KIB4, 4ULL << 20, UINT64_MAX - 1, UINT64_MAX};
	static const uint64_t targets[] = {0, 1, KIB4, (4ULL << 20) + 5, 1ULL << 40, UINT64_MAX};
	mb_ledger l;

	(void)state;
	for (size_t i = 0; i < NBUDGETS; i++) {
		mb_ledger_init(&l, budgets[i]);
		uint64_t limit = credit_limit(&l);
		const uint64_t totals[] = {0,	      1,     limit / 2, limit - KIB4 - 1,
					   limit - 1, limit, limit + 1, budgets[i],
					   UINT64_MAX};
		for (size_t t = 0; t < sizeof(totals) / sizeof(totals[0]); t++) {
			l.committed = totals[t];
			for (size_t h = 0; h < sizeof(helds) / sizeof(helds[0]); h++)
				for (size_t g = 0; g < sizeof(targets) / sizeof(targets[0]); g++) {
					uint64_t got =
					    mb_ledger_credit_grant(&l, helds[h], targets[g], false);
					assert_int_equal(
					    got, expected_grant(&l, helds[h], targets[g], false));
					assert_int_equal(got % KIB4, 0);
					assert_true(got == 0 ||
						    (unsigned __int128)l.committed + got <= limit);
					assert_int_equal(
					    mb_ledger_credit_grant(&l, helds[h], targets[g], true),
					    0);
				}
		}
	}
}

/* ---- mb_parse_size ---- */

static void expect_size(const char *s, uint64_t total, uint64_t want)
{
	uint64_t out = 0xdeadbeef;

	if (mb_parse_size(s, total, &out) != 0)
		fail_msg("mb_parse_size(\"%s\", %llu) refused", s, (unsigned long long)total);
	if (out != want)
		fail_msg("mb_parse_size(\"%s\", %llu) = %llu, want %llu", s,
			 (unsigned long long)total, (unsigned long long)out,
			 (unsigned long long)want);
}

static void expect_refused(const char *s, uint64_t total)
{
	uint64_t out = 0;

	if (mb_parse_size(s, total, &out) != -1)
		fail_msg("mb_parse_size(\"%s\", %llu) accepted (%llu)", s ? s : "(null)",
			 (unsigned long long)total, (unsigned long long)out);
}

static void test_parse_size_bytes_and_suffixes(void **state)
{
	(void)state;
	/* "0" is a valid byte count for the parser (its contract lists empty, negative, junk,
	 * overflow, 0% and >100% as errors, not zero); main.c refuses budgets under 1 MiB. */
	expect_size("0", 0, 0);
	expect_size("1", 0, 1);
	expect_size("4096", 0, 4096);
	expect_size("64K", 0, 64ULL << 10);
	expect_size("64k", 0, 64ULL << 10);
	expect_size("64KiB", 0, 64ULL << 10);
	expect_size("64KB", 0, 64ULL << 10);
	expect_size("512M", 0, 512ULL << 20);
	expect_size("512MiB", 0, 512ULL << 20);
	expect_size("4G", 0, 4ULL << 30);
	expect_size("4g", 0, 4ULL << 30);
	expect_size("4GiB", 0, 4ULL << 30);
	expect_size("1T", 0, 1ULL << 40);
	expect_size("1TiB", 0, 1ULL << 40);
	expect_size("0K", 0, 0);
	expect_size("18446744073709551615", 0, UINT64_MAX);
	expect_size("16777215T", 0, 16777215ULL << 40);
	expect_size("17179869183G", 0, 17179869183ULL << 30);
}

static void test_parse_size_percent(void **state)
{
	(void)state;
	expect_size("50%", 1000, 500);
	expect_size("50%", 1001, 500); /* rounds down */
	expect_size("100%", 8ULL << 30, 8ULL << 30);
	expect_size("1%", 100, 1);
	expect_size("25%", 16ULL << 30, 4ULL << 30);
	expect_size("50%", UINT64_MAX, UINT64_MAX / 2); /* no overflow */
	expect_size("100%", UINT64_MAX, UINT64_MAX);
	expect_refused("0%", 1000);
	expect_refused("101%", 1000);
	expect_refused("1000%", 1000);
	expect_refused("1%", 50); /* rounds to 0 bytes */
	expect_refused("50%", 0); /* nothing to take half of */
	expect_refused("50%%", 1000);
	expect_refused("50 %", 1000);
	expect_refused("50%K", 1000);
	expect_refused("%", 1000);
}

static void test_parse_size_refused(void **state)
{
	(void)state;
	expect_refused(NULL, 1000);
	expect_refused("", 1000);
	expect_refused("-1", 1000);
	expect_refused("-0", 1000);
	expect_refused("+1", 1000);
	expect_refused(" 1", 1000);
	expect_refused("1 ", 1000);
	expect_refused("12Q", 1000);
	expect_refused("1.5G", 1000);
	expect_refused("K", 1000);
	expect_refused("1KK", 1000);
	expect_refused("1KiBx", 1000);
	expect_refused("1Kib", 1000);
	expect_refused("1P", 1000);
	expect_refused("0x10", 1000);
	expect_refused("99999999999999999999", 1000);
	expect_refused("18446744073709551616", 1000);
	/* Overflow with a suffix. */
	expect_refused("16777216T", 1000);
	expect_refused("18446744073709551615K", 1000);
	expect_refused("17179869184G", 1000);
	expect_refused("17592186044416M", 1000);
}

/* ---- mb_options_parse ---- */

/*
 * getopt permutes argv, so each call gets a writable copy, in storage never reused: a program
 * parses one argv, and getopt may still point into the previous one (see
 * test_options_reparse_after_bundle).
 */
static int parse(mb_options *o, int argc, const char *const *args)
{
	static char pool[64][12][128];
	static int calls;
	char *argv[12];

	assert_true(argc < 12);
	assert_true(calls < 64);
	for (int i = 0; i < argc; i++) {
		snprintf(pool[calls][i], sizeof(pool[calls][i]), "%s", args[i]);
		argv[i] = pool[calls][i];
	}
	argv[argc] = NULL;
	calls++;
	return mb_options_parse(argc, argv, o);
}

#define PARSE(o, ...)                                                                              \
	parse(o, (int)(sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *)),              \
	      (const char *const[]){__VA_ARGS__})

static void test_options_defaults(void **state)
{
	mb_options o;

	(void)state;
	assert_int_equal(PARSE(&o, "membrokerd"), 0);
	assert_null(o.listen);
	assert_null(o.budget);
	assert_null(o.config);
	assert_int_equal(o.log_level, -1); /* not given: the configuration decides */
	assert_int_equal(o.contexts, 64);

	assert_int_equal(PARSE(&o, "membrokerd", "-c", "/etc/membroker/test.conf"), 0);
	assert_string_equal(o.config, "/etc/membroker/test.conf");
}

static void test_options_help_version(void **state)
{
	mb_options o;

	(void)state;
	assert_int_equal(PARSE(&o, "membrokerd", "--help"), 1);
	assert_int_equal(PARSE(&o, "membrokerd", "-h"), 1);
	assert_int_equal(PARSE(&o, "membrokerd", "--version"), 1);
	assert_int_equal(PARSE(&o, "membrokerd", "-V"), 1);
	/* Still parses normally afterwards (getopt state is reset). */
	assert_int_equal(PARSE(&o, "membrokerd", "--budget", "1G"), 0);
	assert_string_equal(o.budget, "1G");
}

static void test_options_bad(void **state)
{
	mb_options o;

	(void)state;
	assert_int_equal(PARSE(&o, "membrokerd", "--bogus"), -1);
	assert_int_equal(PARSE(&o, "membrokerd", "-x"), -1);
	assert_int_equal(PARSE(&o, "membrokerd", "--listen"), -1); /* missing argument */
	assert_int_equal(PARSE(&o, "membrokerd", "stray"), -1);
	assert_int_equal(PARSE(&o, "membrokerd", "--log-level", "loud"), -1);
	/* After errors, a good command line parses. */
	assert_int_equal(PARSE(&o, "membrokerd", "-l", "ipc:///tmp/x.sock"), 0);
	assert_string_equal(o.listen, "ipc:///tmp/x.sock");
}

static void test_options_captured(void **state)
{
	mb_options o;

	(void)state;
	assert_int_equal(PARSE(&o, "membrokerd", "--listen", "ipc:///run/test/mb.sock", "--budget",
			       "512M", "--log-level", "debug", "--contexts", "8"),
			 0);
	assert_string_equal(o.listen, "ipc:///run/test/mb.sock");
	assert_string_equal(o.budget, "512M");
	assert_int_equal(o.log_level, LOG_DEBUG);
	assert_int_equal(o.contexts, 8);

	assert_int_equal(PARSE(&o, "membrokerd", "-l", "abstract://mb", "-b", "25%"), 0);
	assert_string_equal(o.listen, "abstract://mb");
	assert_string_equal(o.budget, "25%");
	assert_int_equal(o.contexts, 64);

	assert_int_equal(PARSE(&o, "membrokerd", "--listen=ipc:///a", "--budget=4G"), 0);
	assert_string_equal(o.listen, "ipc:///a");
	assert_string_equal(o.budget, "4G");

	assert_int_equal(PARSE(&o, "membrokerd", "--log-level", "error"), 0);
	assert_int_equal(o.log_level, LOG_ERR);
	assert_int_equal(PARSE(&o, "membrokerd", "--log-level", "warning"), 0);
	assert_int_equal(o.log_level, LOG_WARNING);
}

/*
 * mb_options_parse resets getopt with optind = 1, which glibc does not treat as a restart: a parse
 * that returned in the middle of a bundle of short options ("-hV" returns at 'h') leaves getopt's
 * position inside the old argv, and the next parse continues there. optind = 0 restarts it.
 */
static void test_options_reparse_after_bundle(void **state)
{
	mb_options o;

	(void)state;
	assert_int_equal(PARSE(&o, "membrokerd", "-hV"), 1);
	assert_int_equal(PARSE(&o, "membrokerd", "--budget", "2G"), 0);
	assert_string_equal(o.budget, "2G");
}

static void test_options_contexts_range(void **state)
{
	mb_options o;

	(void)state;
	assert_int_equal(PARSE(&o, "membrokerd", "--contexts", "2"), 0);
	assert_int_equal(o.contexts, 2);
	assert_int_equal(PARSE(&o, "membrokerd", "--contexts", "4096"), 0);
	assert_int_equal(o.contexts, 4096);
	assert_int_equal(PARSE(&o, "membrokerd", "--contexts", "1"), -1);
	assert_int_equal(PARSE(&o, "membrokerd", "--contexts", "0"), -1);
	assert_int_equal(PARSE(&o, "membrokerd", "--contexts", "-5"), -1);
	assert_int_equal(PARSE(&o, "membrokerd", "--contexts", "4097"), -1);
	assert_int_equal(PARSE(&o, "membrokerd", "--contexts", "99999999999999999999"), -1);
	assert_int_equal(PARSE(&o, "membrokerd", "--contexts", "8x"), -1);
	assert_int_equal(PARSE(&o, "membrokerd", "--contexts", ""), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_init),
	    cmocka_unit_test(test_ceiling_exact_small),
	    cmocka_unit_test(test_ceiling_all_budgets),
	    cmocka_unit_test(test_ceiling_near_uint64_max),
	    cmocka_unit_test(test_ceiling_invalid_level),
	    cmocka_unit_test(test_fits_boundaries),
	    cmocka_unit_test(test_fits_near_uint64_max),
	    cmocka_unit_test(test_fits_every_budget),
	    cmocka_unit_test(test_charge_credit),
	    cmocka_unit_test(test_load_rounding),
	    cmocka_unit_test(test_load_every_budget),
	    cmocka_unit_test(test_available_per_level),
	    cmocka_unit_test(test_credit_grant_target_and_held),
	    cmocka_unit_test(test_credit_grant_at_level),
	    cmocka_unit_test(test_credit_grant_waiters),
	    cmocka_unit_test(test_credit_grant_cut_at_80_percent),
	    cmocka_unit_test(test_credit_grant_task_ceiling),
	    cmocka_unit_test(test_credit_grant_page_rounding),
	    cmocka_unit_test(test_credit_grant_budget_zero),
	    cmocka_unit_test(test_credit_grant_near_uint64_max),
	    cmocka_unit_test(test_credit_grant_every_budget),
	    cmocka_unit_test(test_parse_size_bytes_and_suffixes),
	    cmocka_unit_test(test_parse_size_percent),
	    cmocka_unit_test(test_parse_size_refused),
	    cmocka_unit_test(test_options_defaults),
	    cmocka_unit_test(test_options_help_version),
	    cmocka_unit_test(test_options_bad),
	    cmocka_unit_test(test_options_captured),
	    cmocka_unit_test(test_options_contexts_range),
	    cmocka_unit_test(test_options_reparse_after_bundle),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
