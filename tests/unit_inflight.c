/*
 * unit_inflight.c: the per-connection and per-uid bounds of requests in flight (daemon/inflight.c).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "inflight.h"

static void test_pipe_bound(void **state)
{
	mb_inflight *t = mb_inflight_new();
	(void)state;

	assert_non_null(t);
	for (int i = 0; i < MB_INFLIGHT_PER_PIPE; i++)
		assert_int_equal(mb_inflight_add(t, 7, 1000), MB_INFLIGHT_OK);
	assert_int_equal(mb_inflight_add(t, 7, 1000), MB_INFLIGHT_PIPE_FULL);
	assert_int_equal(mb_inflight_pipe(t, 7), MB_INFLIGHT_PER_PIPE);
	/* Another connection of the same uid is not held up by this one's bound. */
	assert_int_equal(mb_inflight_add(t, 8, 1000), MB_INFLIGHT_OK);
	mb_inflight_done(t, 7);
	assert_int_equal(mb_inflight_add(t, 7, 1000), MB_INFLIGHT_OK);
	assert_int_equal(mb_inflight_uid(t, 1000), MB_INFLIGHT_PER_PIPE + 1);
	mb_inflight_free(t);
}

static void test_uid_bound(void **state)
{
	mb_inflight *t = mb_inflight_new();
	uint32_t pipe = 1;
	(void)state;

	for (int i = 0; i < MB_INFLIGHT_PER_UID; i++) {
		if (mb_inflight_pipe(t, pipe) == MB_INFLIGHT_PER_PIPE)
			pipe++;
		assert_int_equal(mb_inflight_add(t, pipe, 1000), MB_INFLIGHT_OK);
	}
	assert_int_equal(mb_inflight_add(t, pipe + 1, 1000), MB_INFLIGHT_UID_FULL);
	/* Nothing was kept for the refused connection, and other uids go on. */
	assert_int_equal(mb_inflight_pipe(t, pipe + 1), 0);
	assert_int_equal(mb_inflight_add(t, 9999, 1001), MB_INFLIGHT_OK);
	/* Root has only the per-connection bound. */
	for (uint32_t p = 100; p < 100 + MB_INFLIGHT_PER_UID / MB_INFLIGHT_PER_PIPE + 2; p++)
		for (int i = 0; i < MB_INFLIGHT_PER_PIPE; i++)
			assert_int_equal(mb_inflight_add(t, p, 0), MB_INFLIGHT_OK);
	mb_inflight_free(t);
}

static void test_records_go_away(void **state)
{
	mb_inflight *t = mb_inflight_new();
	(void)state;

	assert_int_equal(mb_inflight_add(t, 3, 42), MB_INFLIGHT_OK);
	assert_int_equal(mb_inflight_add(t, 3, 43), MB_INFLIGHT_OK); /* the first uid stays */
	assert_int_equal(mb_inflight_uid(t, 42), 2);
	assert_int_equal(mb_inflight_uid(t, 43), 0);
	mb_inflight_done(t, 3);
	mb_inflight_done(t, 3);
	mb_inflight_done(t, 3); /* unknown by now: no-op */
	assert_int_equal(mb_inflight_pipe(t, 3), 0);
	assert_int_equal(mb_inflight_uid(t, 42), 0);
	mb_inflight_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pipe_bound),
	    cmocka_unit_test(test_uid_bound),
	    cmocka_unit_test(test_records_go_away),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
