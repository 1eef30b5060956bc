/*
 * unit_books.c: the pure core of arbitration without sockets: the decision function
 * (daemon/decide.c) over every combination of its inputs, and the books (daemon/books.c): charge,
 * refund, quotas and group reserves on bare session records.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "books.h"
#include "config.h"
#include "decide.h"
#include "section.h"

#define MIB ((uint64_t)1 << 20)

/* ---- decide ---- */

static mb_decision_in base(mb_fit fit)
{
	mb_decision_in in = {.fit = fit, .bytes = MIB, .ceiling = 100 * MIB, .wait_ms = 250};
	return in;
}

static void test_decide_fits(void **state)
{
	(void)state;
	/* A commit that fits is granted, whatever else holds. */
	for (int waiting = 0; waiting < 2; waiting++)
		for (int credit = 0; credit < 2; credit++)
			for (int reclaim = 0; reclaim < 2; reclaim++) {
				mb_decision_in in = base(MB_FIT_OK);
				in.waiting = waiting;
				in.credit_in_way = credit;
				in.reclaimable = reclaim;
				in.stopping = true;
				mb_decision d = mb_decide(&in);
				assert_int_equal(d.verdict, MB_VERDICT_GRANT);
				assert_int_equal(d.reason, MB_REASON_NONE);
			}
}

static void test_decide_credit_first(void **state)
{
	(void)state;
	/* Unused credit goes back before anything else, for every kind of misfit, and for new and
	 * waiting commits alike; once taken it is not asked for again. */
	const mb_fit fits[] = {MB_FIT_CEILING, MB_FIT_CLIENT_MAX, MB_FIT_GROUP_MAX};
	for (size_t i = 0; i < 3; i++)
		for (int waiting = 0; waiting < 2; waiting++) {
			mb_decision_in in = base(fits[i]);
			in.waiting = waiting;
			in.parkable = !waiting;
			in.credit_in_way = true;
			in.reclaimable = true;
			assert_int_equal(mb_decide(&in).verdict, MB_VERDICT_TAKE_CREDIT);
			in.credit_taken = true;
			assert_int_not_equal(mb_decide(&in).verdict, MB_VERDICT_TAKE_CREDIT);
		}
}

static void test_decide_quota_refused(void **state)
{
	(void)state;
	/* Over its own or its group's limit: refused at once (waiting does not help), and MEM_RESET
	 * pages of others are not discarded for it. A waiting commit is refused the same way. */
	for (int waiting = 0; waiting < 2; waiting++) {
		mb_decision_in in = base(MB_FIT_CLIENT_MAX);
		in.waiting = waiting;
		in.parkable = true;
		in.reclaimable = true;
		mb_decision d = mb_decide(&in);
		assert_int_equal(d.verdict, MB_VERDICT_REFUSE);
		assert_int_equal(d.reason, MB_REASON_CLIENT_MAX);
		in.fit = MB_FIT_GROUP_MAX;
		d = mb_decide(&in);
		assert_int_equal(d.verdict, MB_VERDICT_REFUSE);
		assert_int_equal(d.reason, MB_REASON_GROUP_MAX);
	}
}

static void test_decide_reclaim_then_park(void **state)
{
	(void)state;
	/* Short of budget: reclaim first, for a new commit and a waiting one alike (the waker
	 * reclaims too); then park. */
	for (int waiting = 0; waiting < 2; waiting++) {
		mb_decision_in in = base(MB_FIT_CEILING);
		in.waiting = waiting;
		in.parkable = !waiting;
		in.reclaimable = true;
		assert_int_equal(mb_decide(&in).verdict, MB_VERDICT_RECLAIM);
		in.reclaimed = true;
		assert_int_equal(mb_decide(&in).verdict, MB_VERDICT_PARK);
		in.reclaimed = false;
		in.reclaimable = false;
		assert_int_equal(mb_decide(&in).verdict, MB_VERDICT_PARK);
	}
}

static void test_decide_budget_refusals(void **state)
{
	(void)state;
	mb_decision_in in = base(MB_FIT_CEILING);
	mb_decision d;

	/* A level that does not wait. */
	in.wait_ms = 0;
	in.parkable = true;
	d = mb_decide(&in);
	assert_int_equal(d.verdict, MB_VERDICT_REFUSE);
	assert_int_equal(d.reason, MB_REASON_BUDGET);
	/* A level that waits, but the caller cannot park (no storage). */
	in.wait_ms = 250;
	in.parkable = false;
	d = mb_decide(&in);
	assert_int_equal(d.verdict, MB_VERDICT_REFUSE);
	assert_int_equal(d.reason, MB_REASON_BUDGET);
	/* Larger than the whole ceiling: could never fit, so it does not wait. */
	in.parkable = true;
	in.bytes = in.ceiling + 4096;
	d = mb_decide(&in);
	assert_int_equal(d.verdict, MB_VERDICT_REFUSE);
	assert_int_equal(d.reason, MB_REASON_TOO_LARGE);
	in.waiting = true;
	assert_int_equal(mb_decide(&in).reason, MB_REASON_TOO_LARGE);
	/* Exactly the ceiling may wait. */
	in.waiting = false;
	in.bytes = in.ceiling;
	assert_int_equal(mb_decide(&in).verdict, MB_VERDICT_PARK);
}

static void test_decide_stopping(void **state)
{
	(void)state;
	mb_decision_in in = base(MB_FIT_CEILING);
	mb_decision d;

	in.stopping = true;
	in.parkable = true;
	d = mb_decide(&in);
	assert_int_equal(d.verdict, MB_VERDICT_REFUSE);
	assert_int_equal(d.reason, MB_REASON_STOPPING);
	in.waiting = true;
	in.parkable = false;
	d = mb_decide(&in);
	assert_int_equal(d.verdict, MB_VERDICT_REFUSE);
	assert_int_equal(d.reason, MB_REASON_STOPPING);
	/* A level that never waits is refused for the budget, not abandoned. */
	in.waiting = false;
	in.wait_ms = 0;
	assert_int_equal(mb_decide(&in).reason, MB_REASON_BUDGET);
	/* Every reason has words. */
	for (int r = MB_REASON_NONE; r <= MB_REASON_STOPPING; r++)
		assert_true(strlen(mb_reason_text((mb_reason)r)) > 0);
}

/* ---- books ---- */

typedef struct fixture {
	mb_config conf;
	mb_books books;
	mb_section *s[3];
} fixture;

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	mb_config_defaults(&f->conf);
	f->conf.ngroups = 2;
	strcpy(f->conf.groups[0].name, "a");
	f->conf.groups[0].uids.n = 1;
	f->conf.groups[0].uids.r[0].lo = f->conf.groups[0].uids.r[0].hi = 1000;
	f->conf.groups[0].max = 40 * MIB;
	strcpy(f->conf.groups[1].name, "b");
	f->conf.groups[1].uids.n = 1;
	f->conf.groups[1].uids.r[0].lo = f->conf.groups[1].uids.r[0].hi = 2000;
	f->conf.groups[1].reserve = 20 * MIB;
	f->conf.client_max = 30 * MIB;
	mb_books_init(&f->books, 100 * MIB, &f->conf);
	f->s[0] = mb_section_new(100, 1000, 1000);
	f->s[1] = mb_section_new(101, 1000, 1000);
	f->s[2] = mb_section_new(102, 2000, 2000);
	for (int i = 0; i < 3; i++) {
		if (f->s[i] == NULL)
			return -1;
		mb_books_join_group(&f->books, f->s[i]);
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;

	for (int i = 0; i < 3; i++)
		mb_section_free(f->s[i], false);
	free(f);
	return 0;
}

/* Commits n pages at the start of a fresh 128 MiB reservation of s at level 0. */
static void commit(fixture *f, mb_section *s, uint64_t base, size_t pages)
{
	mb_page_range pr;

	if (mb_regmap_find(&s->map, (uintptr_t)base) == NULL)
		assert_int_equal(mb_regmap_insert(&s->map, (uintptr_t)base, 128 * MIB, 0, NULL), 0);
	assert_int_equal(mb_win32_plan_range(&s->map, (uintptr_t)base, pages * MB_PAGE_SIZE, &pr),
			 S_OK);
	assert_int_equal(mb_books_commit_pages(&f->books, s, &pr, 0), (long)pages);
}

static uint64_t sum(const fixture *f)
{
	uint64_t t = 0;
	for (int i = 0; i < 3; i++)
		t += mb_section_charged(f->s[i]);
	return t;
}

static void test_books_groups_and_quotas(void **state)
{
	fixture *f = *state;
	const size_t mib_pages = MIB / MB_PAGE_SIZE;

	assert_int_equal(f->s[0]->group, 0);
	assert_int_equal(f->s[2]->group, 1);
	assert_int_equal(f->books.group_sessions[0], 2);
	assert_int_equal(f->books.group_sessions[1], 1);

	assert_int_equal(mb_books_fits(&f->books, f->s[0], 0, 30 * MIB), MB_FIT_OK);
	/* The client's own limit comes first. */
	assert_int_equal(mb_books_fits(&f->books, f->s[0], 0, 31 * MIB), MB_FIT_CLIENT_MAX);
	commit(f, f->s[0], 1 << 30, 30 * mib_pages);
	assert_int_equal(f->books.ledger.committed, 30 * MIB);
	assert_int_equal(f->books.group_charged[0], 30 * MIB);
	assert_int_equal(mb_books_fits(&f->books, f->s[0], 0, MB_PAGE_SIZE), MB_FIT_CLIENT_MAX);
	/* The group's limit (40 MiB) for the second client of group a. */
	assert_int_equal(mb_books_fits(&f->books, f->s[1], 0, 10 * MIB), MB_FIT_OK);
	assert_int_equal(mb_books_fits(&f->books, f->s[1], 0, 11 * MIB), MB_FIT_GROUP_MAX);
	commit(f, f->s[1], 1 << 30, 10 * mib_pages);
	/* Group b's own reserve does not hold back its own client, only the client limit. */
	assert_int_equal(mb_books_fits(&f->books, f->s[2], 0, 30 * MIB), MB_FIT_OK);
	assert_int_equal(mb_books_fits(&f->books, f->s[2], 0, 30 * MIB + MB_PAGE_SIZE),
			 MB_FIT_CLIENT_MAX);
	assert_int_equal(f->books.ledger.committed, sum(f));

	/* A refund goes back to the ledger and the group together, never below zero. */
	mb_books_refund(&f->books, f->s[1], 4 * MIB);
	assert_int_equal(f->books.ledger.committed, 36 * MIB);
	assert_int_equal(f->books.group_charged[0], 36 * MIB);
	mb_books_charge(&f->books, f->s[1], 4 * MIB);
	assert_int_equal(f->books.ledger.committed, sum(f));

	/* Leaving refunds everything the session charged, credit included. */
	f->s[1]->credit = 2 * MIB;
	f->books.credit_total = 2 * MIB;
	mb_books_charge(&f->books, f->s[1], 2 * MIB);
	assert_int_equal(f->books.ledger.committed, sum(f));
	mb_books_leave(&f->books, f->s[1]);
	assert_int_equal(f->books.ledger.committed, 30 * MIB);
	assert_int_equal(f->books.group_charged[0], 30 * MIB);
	assert_int_equal(f->books.group_sessions[0], 1);
	assert_int_equal(f->books.credit_total, 0);
	f->s[1]->credit = 0;

	/* A reload recomputes the groups from the sessions' charges. */
	mb_books_clear_groups(&f->books);
	assert_int_equal(f->books.group_charged[0], 0);
	mb_books_join_group(&f->books, f->s[0]);
	mb_books_join_group(&f->books, f->s[2]);
	assert_int_equal(f->books.group_charged[0], 30 * MIB);
	assert_int_equal(f->books.group_sessions[0], 1);
}

static void test_books_ceiling(void **state)
{
	fixture *f = *state;

	f->conf.client_max = 0;
	f->conf.groups[0].max = 0;
	/* Others may not eat into group b's unused reserve (20 MiB): at task level group a may
	 * bring the total to 90 - 20 MiB, group b to the whole 90. */
	assert_int_equal(mb_books_fits(&f->books, f->s[0], 0, 70 * MIB), MB_FIT_OK);
	assert_int_equal(mb_books_fits(&f->books, f->s[0], 0, 70 * MIB + MB_PAGE_SIZE),
			 MB_FIT_CEILING);
	assert_int_equal(mb_books_fits(&f->books, f->s[2], 0, 90 * MIB), MB_FIT_OK);
	/* What b commits comes out of its reserve first. */
	commit(f, f->s[2], 1 << 30, (size_t)(5 * MIB / MB_PAGE_SIZE));
	assert_int_equal(mb_books_fits(&f->books, f->s[0], 0, 70 * MIB), MB_FIT_OK);
	assert_int_equal(mb_books_fits(&f->books, f->s[0], 0, 70 * MIB + MB_PAGE_SIZE),
			 MB_FIT_CEILING);
	mb_books_refund(&f->books, f->s[2], 5 * MIB);
	mb_regmap_clear(&f->s[2]->map, NULL, NULL);
	f->conf.groups[1].reserve = 0;
	/* Levels: 90 / 97 / 100 MiB of the 100 MiB budget. */
	commit(f, f->s[0], 1 << 30, (size_t)(90 * MIB / MB_PAGE_SIZE));
	assert_int_equal(mb_books_fits(&f->books, f->s[1], 0, MB_PAGE_SIZE), MB_FIT_CEILING);
	assert_int_equal(mb_books_fits(&f->books, f->s[1], 1, 7 * MIB), MB_FIT_OK);
	assert_int_equal(mb_books_fits(&f->books, f->s[1], 1, 7 * MIB + MB_PAGE_SIZE),
			 MB_FIT_CEILING);
	assert_int_equal(mb_books_fits(&f->books, f->s[1], 2, 10 * MIB), MB_FIT_OK);
	/* Overflowing sizes never fit. */
	assert_int_equal(mb_books_fits(&f->books, f->s[1], 2, UINT64_MAX), MB_FIT_CEILING);
	/* The max level a session committed at is kept (reclaim order). */
	assert_int_equal(f->s[0]->max_level, 0);
}

/* A charge that takes the total past the budget breaks the invariant: counted with its path
 * (not fatal here: abort_on_violation is the daemon's choice). Charges within it count nothing. */
static void test_books_violation_counted(void **state)
{
	fixture *f = *state;

	mb_books_charge(&f->books, f->s[0], 60 * MIB);
	mb_books_charge(&f->books, f->s[1], 40 * MIB);
	assert_int_equal(f->books.violations, 0);
	mb_books_charge(&f->books, f->s[2], MB_PAGE_SIZE);
	assert_int_equal(f->books.violations, 1);
	assert_non_null(strstr(f->books.violation_where, "past the budget"));
	mb_books_refund(&f->books, f->s[2], MB_PAGE_SIZE);
	mb_books_refund(&f->books, f->s[1], 40 * MIB);
	mb_books_refund(&f->books, f->s[0], 60 * MIB);
	mb_books_violation(&f->books, "a test", 1, 2);
	assert_int_equal(f->books.violations, 2);
	assert_string_equal(f->books.violation_where, "a test");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_decide_fits),
	    cmocka_unit_test(test_decide_credit_first),
	    cmocka_unit_test(test_decide_quota_refused),
	    cmocka_unit_test(test_decide_reclaim_then_park),
	    cmocka_unit_test(test_decide_budget_refusals),
	    cmocka_unit_test(test_decide_stopping),
	    cmocka_unit_test_setup_teardown(test_books_groups_and_quotas, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_books_ceiling, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_books_violation_counted, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
