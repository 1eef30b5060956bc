/*
 * test_many_connections.c: 1,100 connections from one unprivileged uid (1,024 allowed).
 *
 * The connections past the limit used to be closed from nng's own pipe callback, which wedged
 * nng 1.5.2's connection cleanup: 1,102 sockets stayed open with 0 sessions, and every later
 * connection leaked one descriptor. Now refused connections are closed from the broker's own
 * thread. Asserted: honest clients connect and commit meanwhile, and once the attacker closes
 * its connections the broker's descriptors are back to what they were.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hostile.h"
#include "membroker.h"

#define CONNECTIONS 1100
#define NOBODY	    65534

typedef struct attack {
	char path[300];
	int ready[2]; /* the attacker writes one byte when all its connections are open */
} attack;

static void many(void *arg)
{
	attack *a = arg;
	struct rlimit rl = {.rlim_cur = 4096, .rlim_max = 4096};
	static int fds[CONNECTIONS];
	int open = 0;

	setrlimit(RLIMIT_NOFILE, &rl);
	if (setgroups(0, NULL) != 0 || setgid(NOBODY) != 0 || setuid(NOBODY) != 0)
		_exit(2);
	for (int i = 0; i < CONNECTIONS; i++) {
		/* The broker takes at most 200 new connections a second from one process. */
		for (int tries = 0; tries < 1000 && (fds[i] = mb_hostile_sp_open(a->path)) < 0;
		     tries++)
			usleep(5000);
		open += fds[i] >= 0;
	}
	(void)!write(a->ready[1], &open, sizeof(open));
	pause(); /* holds them until killed */
}

static void test_one_uid_over_its_limit(void **state)
{
	const char *args[] = {"--budget", "256M", NULL};
	mb_test_broker b;
	attack a;
	long ms;
	int fds, sockets, opened = 0;
	(void)state;

	assert_int_equal(mb_test_broker_start(&b, args), 0);
	/* Let the unprivileged attacker reach the socket. */
	assert_int_equal(chmod(b.dir, 0755), 0);
	assert_int_equal(chmod(mb_hostile_path(&b), 0666), 0);
	mb_hostile_baseline(b.pid, &fds, &sockets);
	snprintf(a.path, sizeof(a.path), "%s", mb_hostile_path(&b));
	assert_int_equal(pipe(a.ready), 0);
	pid_t attacker = mb_hostile_fork(many, &a);
	assert_true(attacker > 0);
	assert_int_equal(read(a.ready[0], &opened, sizeof(opened)), (ssize_t)sizeof(opened));
	printf("the attacker opened %d connections\n", opened);
	assert_true(opened >= 1024);

	assert_int_equal(mb_hostile_honest(b.address, 1 << 20, &ms), 0);
	printf("honest connect+commit with %d connections of uid %d open: %ld ms\n", opened, NOBODY,
	       ms);
	mb_hostile_kill(attacker);

	int now = mb_hostile_wait_fds(b.pid, fds, 30000);
	printf("broker descriptors %d before, %d after\n", fds, now);
	assert_true(now <= fds);
	/* Cleanup still works for later connections. */
	for (int i = 0; i < 5; i++)
		assert_int_equal(mb_hostile_honest(b.address, 1 << 20, &ms), 0);
	assert_true(mb_hostile_wait_fds(b.pid, fds, 30000) <= fds);
	assert_int_equal(mb_test_broker_stop(&b), 0);
}

int main(int argc, char **argv)
{
	mb_hostile_roles(argc, argv);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_one_uid_over_its_limit),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
