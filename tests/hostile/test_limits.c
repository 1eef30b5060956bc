/*
 * test_limits.c: documented limits are enforced, and each refusal names its limit.
 *
 * client_max_reserved (16 TiB unless configured) was parsed but never enforced: a client could
 * reserve 127 TiB, growing the broker's page-state bookkeeping with it. Asserted: a reservation
 * past the limit is refused with E_OUTOFMEMORY and a detail naming client_max_reserved, the
 * client's earlier reservations keep working, and another client is unaffected.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "hostile.h"
#include "membroker.h"

#define TiB ((SIZE_T)1 << 40)

static void test_client_max_reserved_default(void **state)
{
	const char *args[] = {"--budget", "256M", NULL};
	mb_test_broker b;
	mb_client *greedy = NULL;
	void *small = NULL, *big = NULL, *more = NULL;
	long ms;
	(void)state;

	assert_int_equal(mb_test_broker_start(&b, args), 0);
	assert_hr(mb_connect(b.address, &greedy), S_OK);
	assert_hr(mb_virtual_alloc(greedy, NULL, 1 << 20, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
				   eTaskCritical, &small),
		  S_OK);
	/* 20 TiB at once, past the 16 TiB default. */
	assert_hr(mb_virtual_alloc(greedy, NULL, 20 * TiB, MEM_RESERVE, PAGE_NOACCESS,
				   eTaskCritical, &big),
		  E_OUTOFMEMORY);
	printf("refused: %s\n", mb_last_error());
	assert_non_null(strstr(mb_last_error(), "client_max_reserved"));
	/* 12 TiB fits; 8 more would not. */
	assert_hr(mb_virtual_alloc(greedy, NULL, 12 * TiB, MEM_RESERVE, PAGE_NOACCESS,
				   eTaskCritical, &big),
		  S_OK);
	assert_hr(mb_virtual_alloc(greedy, NULL, 8 * TiB, MEM_RESERVE, PAGE_NOACCESS, eTaskCritical,
				   &more),
		  E_OUTOFMEMORY);
	assert_non_null(strstr(mb_last_error(), "client_max_reserved"));
	memset(small, 0x11, 1 << 20);
	assert_int_equal(mb_hostile_honest(b.address, 1 << 20, &ms), 0);
	assert_hr(mb_virtual_free(greedy, big, 0, MEM_RELEASE), S_OK);
	assert_hr(mb_virtual_free(greedy, small, 0, MEM_RELEASE), S_OK);
	mb_disconnect(greedy);
	assert_int_equal(mb_test_broker_stop(&b), 0);
}

int main(int argc, char **argv)
{
	mb_hostile_roles(argc, argv);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_client_max_reserved_default),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
