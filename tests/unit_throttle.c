/*
 * unit_throttle.c: the refusal periods of uids whose processes were disconnected for offences.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "throttle.h"

static void test_first_strike_refuses_for_the_first_period(void **state)
{
	mb_throttle t;
	(void)state;

	mb_throttle_init(&t);
	assert_int_equal(mb_throttle_wait(&t, 1000, 50), 0);
	assert_int_equal(mb_throttle_strike(&t, 1000, 100), MB_THROTTLE_FIRST_MS);
	assert_int_equal(mb_throttle_wait(&t, 1000, 100), MB_THROTTLE_FIRST_MS);
	assert_int_equal(mb_throttle_wait(&t, 1000, 100 + MB_THROTTLE_FIRST_MS - 1), 1);
	assert_int_equal(mb_throttle_wait(&t, 1000, 100 + MB_THROTTLE_FIRST_MS), 0);
	/* Another uid is not touched. */
	assert_int_equal(mb_throttle_wait(&t, 1001, 100), 0);
}

/* offender_refusal_ms replaces the first period; repeats double it, up to the same cap. */
static void test_configured_first_period(void **state)
{
	mb_throttle t;
	(void)state;

	mb_throttle_init(&t);
	t.first_ms = 30000;
	assert_int_equal(mb_throttle_strike(&t, 9, 100), 30000);
	assert_int_equal(mb_throttle_wait(&t, 9, 100 + 29999), 1);
	assert_int_equal(mb_throttle_strike(&t, 9, 100 + 30000), 60000);
	t.first_ms = 200000;
	assert_int_equal(mb_throttle_strike(&t, 10, 100), 200000);
	assert_int_equal(mb_throttle_strike(&t, 10, 100 + 200000), MB_THROTTLE_MAX_MS);
}

static void test_repeats_double_up_to_the_cap(void **state)
{
	mb_throttle t;
	uint64_t now = 1000, want = MB_THROTTLE_FIRST_MS;
	(void)state;

	mb_throttle_init(&t);
	for (int i = 0; i < 20; i++) {
		assert_int_equal(mb_throttle_strike(&t, 7, now), want);
		now += want; /* strikes again as soon as it may connect */
		want = want * 2 > MB_THROTTLE_MAX_MS ? MB_THROTTLE_MAX_MS : want * 2;
	}
	assert_int_equal(mb_throttle_strike(&t, 7, now), MB_THROTTLE_MAX_MS);
}

static void test_a_quiet_uid_starts_over(void **state)
{
	mb_throttle t;
	(void)state;

	mb_throttle_init(&t);
	mb_throttle_strike(&t, 7, 0);
	assert_int_equal(mb_throttle_strike(&t, 7, 10000), 2 * MB_THROTTLE_FIRST_MS);
	assert_int_equal(mb_throttle_strike(&t, 7, 10000 + MB_THROTTLE_FORGET_MS),
			 MB_THROTTLE_FIRST_MS);
}

static void test_a_full_table_forgets_the_earliest_end(void **state)
{
	mb_throttle t;
	(void)state;

	mb_throttle_init(&t);
	for (uid_t u = 0; u < MB_THROTTLE_UIDS; u++)
		mb_throttle_strike(&t, 100 + u, 1000 + u); /* uid 100 ends first */
	assert_int_equal(t.n, MB_THROTTLE_UIDS);
	mb_throttle_strike(&t, 5000, 2000);
	assert_int_equal(t.n, MB_THROTTLE_UIDS);
	assert_int_equal(mb_throttle_wait(&t, 100, 2000), 0);
	assert_true(mb_throttle_wait(&t, 101, 2000) > 0);
	assert_int_equal(mb_throttle_wait(&t, 5000, 2000), MB_THROTTLE_FIRST_MS);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_first_strike_refuses_for_the_first_period),
	    cmocka_unit_test(test_configured_first_period),
	    cmocka_unit_test(test_repeats_double_up_to_the_cap),
	    cmocka_unit_test(test_a_quiet_uid_starts_over),
	    cmocka_unit_test(test_a_full_table_forgets_the_earliest_end),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
