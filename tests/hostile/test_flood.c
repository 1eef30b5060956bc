/*
 * test_flood.c: clients that send requests and never read the replies, and clients that park
 * thousands of Watch long polls.
 *
 * Both used to hold every request context of the broker (a few hundred unread replies fill the
 * connection's socket buffer, after which each further reply pins a context; each parked Watch
 * holds one), so everyone else's calls waited until the self-probe restarted the listener, which
 * dropped every connection. Now each connection (and each uid) may have only so many requests in
 * flight (daemon/inflight.h); past that its requests are dropped unanswered, and contexts are
 * added while others are busy. Asserted: honest clients connect and commit within
 * mb_hostile_honest_bound (2 s on a quiet machine) meanwhile, a client connected before keeps its
 * connection and memory, the broker says it dropped the attackers' requests, and once they are gone
 * its descriptors come back to what they were.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hostile.h"
#include "membroker.h"
#include "membroker.pb-c.h"

#define ATTACKERS     4
#define HONEST_ROUNDS 5
#define HONEST_BYTES  (1 << 20)

typedef struct attack {
	char path[300];
	bool watch; /* Hello, then Watch requests; else requests without a session */
} attack;

/* An attacker (forked): mb_hostile_unread_flood. */
static void flood(void *arg)
{
	const attack *a = arg;
	mb_hostile_unread_flood(a->path, a->watch);
}

static void run_flood(bool watch)
{
	const char *args[] = {"--budget", "256M", NULL};
	mb_test_broker b;
	mb_client *keeper = NULL;
	unsigned char *mem = NULL;
	mb_session_status before, after;
	attack a = {.watch = watch};
	pid_t attackers[ATTACKERS];
	long worst = 0, ms;

	assert_int_equal(mb_test_broker_start(&b, args), 0);
	assert_hr(mb_connect(b.address, &keeper), S_OK);
	assert_hr(mb_virtual_alloc(keeper, NULL, HONEST_BYTES, MEM_RESERVE | MEM_COMMIT,
				   PAGE_READWRITE, eTaskCritical, (void **)&mem),
		  S_OK);
	memset(mem, 0xa5, HONEST_BYTES);
	assert_hr(mb_get_session_status(keeper, &before), S_OK);
	long bound = mb_hostile_honest_bound(b.address, HONEST_BYTES);
	int fds, sockets;
	mb_hostile_baseline(b.pid, &fds, &sockets);

	snprintf(a.path, sizeof(a.path), "%s", mb_hostile_path(&b));
	for (int i = 0; i < ATTACKERS; i++) {
		attackers[i] = mb_hostile_fork(flood, &a);
		assert_true(attackers[i] > 0);
	}
	usleep(500000);
	for (int i = 0; i < HONEST_ROUNDS; i++) {
		assert_int_equal(mb_hostile_honest(b.address, HONEST_BYTES, &ms), 0);
		if (ms > worst)
			worst = ms;
		assert_hr(mb_get_session_status(keeper, &after), S_OK);
	}
	printf("%s flood: slowest honest connect+commit %ld ms\n", watch ? "watch" : "unread reply",
	       worst);
	printf("allowed: %ld ms (20 times the slowest without the attack, at least 2 s)\n", bound);
	assert_true(worst <= bound);

	/* Still attacking (blocked in a write the broker no longer reads), and refused. */
	for (int i = 0; i < ATTACKERS; i++)
		assert_int_equal(waitpid(attackers[i], NULL, WNOHANG), 0);
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "grep -q 'requests in flight than one connection' %s", b.log);
	assert_int_equal(system(cmd), 0);
	for (int i = 0; i < ATTACKERS; i++)
		kill(attackers[i], SIGUSR1);
	for (int i = 0; i < ATTACKERS; i++) {
		int status;
		assert_int_equal(waitpid(attackers[i], &status, 0), attackers[i]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}

	assert_hr(mb_get_session_status(keeper, &after), S_OK);
	assert_u64(after.committed, before.committed);
	for (size_t i = 0; i < HONEST_BYTES; i += 4096)
		assert_int_equal(mem[i], 0xa5);
	int now = mb_hostile_wait_fds(b.pid, fds, 30000);
	printf("broker descriptors %d before, %d after\n", fds, now);
	if (now > fds) {
		snprintf(cmd, sizeof(cmd), "grep -v pressure %s | tail -30 >&2", b.log);
		(void)!system(cmd);
	}
	assert_true(now <= fds);

	assert_hr(mb_virtual_free(keeper, mem, 0, MEM_RELEASE), S_OK);
	mb_disconnect(keeper);
	assert_int_equal(mb_test_broker_stop(&b), 0);
}

static void test_unread_replies(void **state)
{
	(void)state;
	run_flood(false);
}

static void test_watch_flood(void **state)
{
	(void)state;
	run_flood(true);
}

int main(int argc, char **argv)
{
	mb_hostile_roles(argc, argv);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_unread_replies),
	    cmocka_unit_test(test_watch_flood),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
