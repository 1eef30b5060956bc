/*
 * unit_creds.c: supplementary groups from SO_PEERGROUPS (daemon/creds.c), on socket pairs.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <grp.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "creds.h"

static bool has(const gid_t *g, int n, gid_t want)
{
	for (int i = 0; i < n; i++)
		if (g[i] == want)
			return true;
	return false;
}

/* The peer of a socket pair is this process: its groups come back, found among our fds. */
static void test_own_groups(void **state)
{
	gid_t mine[256], *got = NULL;
	int sv[2], nmine, n;

	(void)state;
	nmine = getgroups(256, mine);
	assert_true(nmine >= 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	n = mb_sock_peer_groups(sv[0], &got);
	assert_int_equal(n, nmine);
	for (int i = 0; i < nmine; i++)
		assert_true(has(got, n, mine[i]));
	free(got);

	n = mb_peer_groups(getpid(), getuid(), getgid(), &got);
	assert_int_equal(n, nmine);
	free(got);
	close(sv[0]);
	close(sv[1]);
}

/* Credentials that no connection of ours has: nothing is believed. */
static void test_unknown_peer(void **state)
{
	gid_t *got = (gid_t *)&got;
	int sv[2];

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(mb_peer_groups(getpid(), getuid() + 1, getgid(), &got), -1);
	assert_null(got);
	assert_int_equal(mb_peer_groups(getpid(), getuid(), getgid() + 1, &got), -1);
	assert_int_equal(mb_peer_groups(0, getuid(), getgid(), &got), -1);
	assert_null(got);
	assert_int_equal(mb_sock_peer_groups(-1, &got), -1);
	assert_null(got);
	close(sv[0]);
	close(sv[1]);
}

/* Many groups (more than the first guess of the buffer), as root in a child. */
static void test_many_groups(void **state)
{
	int status;
	pid_t pid;

	(void)state;
	if (geteuid() != 0)
		skip(); /* setgroups needs root */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		gid_t set[300], *got = NULL;
		int sv[2], n;
		for (int i = 0; i < 300; i++)
			set[i] = (gid_t)(5000 + i);
		if (setgroups(300, set) != 0 ||
		    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
			_exit(3);
		n = mb_peer_groups(getpid(), getuid(), getgid(), &got);
		if (n != 300)
			_exit(4);
		for (int i = 0; i < 300; i++)
			if (!has(got, n, set[i]))
				_exit(5);
		free(got);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_own_groups),
	    cmocka_unit_test(test_unknown_peer),
	    cmocka_unit_test(test_many_groups),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
