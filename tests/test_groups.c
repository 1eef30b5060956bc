/*
 * test_groups.c: groups (sandboxes) from the configuration file against a real broker: a group's
 * members share its max, and its reserve is kept from clients outside it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "harness.h"
#include "membroker.h"

#define MiB ((size_t)1 << 20)

static mb_test_broker broker;
static char conf_path[160];

static int setup(void **state)
{
	char dir[] = "/tmp/mbgroups.XXXXXX";
	FILE *f;

	(void)state;
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(conf_path, sizeof(conf_path), "%s/membroker.conf", dir);
	f = fopen(conf_path, "w");
	if (f == NULL)
		return -1;
	/* The tests run as root (uid 0), so names are honoured for uid 0. */
	fputs("[group.alpha]\n"
	      "names = alpha-*\n"
	      "name_uids = 0\n"
	      "max = 16M\n"
	      "reserve = 8M\n",
	      f);
	fclose(f);
	return mb_test_broker_start(
	    &broker, (const char *[]){"--budget", "64M", "--config", conf_path, NULL});
}

static int teardown(void **state)
{
	(void)state;
	mb_test_broker_stop(&broker);
	unlink(conf_path);
	return 0;
}

static mb_client *connect_as(const char *name)
{
	mb_client *c = NULL;
	assert_int_equal(mb_connect_named(broker.address, name, &c), S_OK);
	return c;
}

static HRESULT commit(mb_client *c, size_t bytes, void **p)
{
	return mb_virtual_alloc(c, NULL, bytes, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
				eTaskCritical, p);
}

static void test_group_max_is_shared(void **state)
{
	mb_client *a1 = connect_as("alpha-1"), *a2 = connect_as("alpha-2");
	void *p = NULL, *q = NULL, *r = NULL;

	(void)state;
	assert_int_equal(commit(a1, 12 * MiB, &p), S_OK);
	/* 12 + 8 > 16 MiB: the group's max, though the budget has room. */
	assert_int_equal(commit(a2, 8 * MiB, &q), E_OUTOFMEMORY);
	assert_null(q);
	assert_int_equal(commit(a2, 4 * MiB, &q), S_OK);
	assert_int_equal(commit(a1, 4096, &r), E_OUTOFMEMORY);
	assert_int_equal(mb_virtual_free(a1, p, 0, MEM_RELEASE), S_OK);
	assert_int_equal(commit(a2, 8 * MiB, &r), S_OK);
	mb_disconnect(a1);
	mb_disconnect(a2);
}

/* Nothing committed by anyone: the previous test's sessions end asynchronously in the broker. */
static bool budget_empty(void *arg)
{
	mb_session_status st;
	return mb_get_session_status(arg, &st) == S_OK && st.total_committed == 0;
}

static void test_reserve_is_kept_from_others(void **state)
{
	mb_client *other = connect_as("someone-else"), *a = connect_as("alpha-9");
	mb_session_status st;
	void *p = NULL, *q = NULL, *r = NULL;
	/* eTaskCritical may bring the total to 90% of 64 MiB; alpha keeps 8 MiB of it. */
	const size_t ceiling = (size_t)(64 * MiB) / 1000 * 900;
	const size_t for_others = (ceiling - 8 * MiB) & ~(size_t)4095;

	(void)state;
	assert_true(mb_test_wait_for(budget_empty, other, 20000));
	assert_int_equal(commit(other, for_others, &p), S_OK);
	assert_int_equal(commit(other, 64 * 1024, &q), E_OUTOFMEMORY);
	/* alpha can still have its reserve. */
	assert_int_equal(commit(a, 8 * MiB, &r), S_OK);
	assert_int_equal(mb_get_session_status(a, &st), S_OK);
	assert_int_equal(st.total_committed, for_others + 8 * MiB);
	/* What alpha uses of its reserve is no longer held back: still nothing more for others. */
	assert_int_equal(commit(other, 64 * 1024, &q), E_OUTOFMEMORY);
	assert_int_equal(mb_virtual_free(a, r, 0, MEM_RELEASE), S_OK);
	assert_int_equal(commit(other, 64 * 1024, &q), E_OUTOFMEMORY);
	mb_disconnect(a);
	mb_disconnect(other);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_group_max_is_shared),
	    cmocka_unit_test(test_reserve_is_kept_from_others),
	};
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, teardown);
}
