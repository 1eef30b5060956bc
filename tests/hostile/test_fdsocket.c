/*
 * test_fdsocket.c: the section hand-over socket (<rpc socket>.fd) under attack.
 *
 * It used to serve one peer at a time with 1 s each, so 128 silent connections made honest
 * mb_connect fail after 30 s; a process guessing tokens for other clients' sessions burnt them (the
 * token was burnt before the uid/pid check) and wrote a log line per guess (530,001 lines in 40 s).
 * Now it serves many peers at once with a short deadline each, checks uid and pid before touching
 * a token, and rate-limits its refusals. Asserted: honest clients connect and commit within
 * mb_hostile_honest_bound (2 s on a quiet machine) while the attack runs, the broker's log grows by
 * at most a few lines a second, and its descriptors come back afterwards.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <endian.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hostile.h"
#include "membroker.h"

#define HONEST_ROUNDS 6
#define HONEST_BYTES  (1 << 20)
#define SILENT_PEERS  300

typedef struct attack {
	char path[300];
} attack;

/* Holds SILENT_PEERS connections that never say a word, reopening those the broker drops. */
static void silent(void *arg)
{
	const attack *a = arg;
	int fds[SILENT_PEERS];

	for (int i = 0; i < SILENT_PEERS; i++)
		fds[i] = -1;
	for (;;) {
		for (int i = 0; i < SILENT_PEERS; i++) {
			char c;
			if (fds[i] >= 0 && recv(fds[i], &c, 1, MSG_DONTWAIT) != 0)
				continue; /* still open (EAGAIN) */
			if (fds[i] >= 0)
				close(fds[i]);
			fds[i] = mb_hostile_connect(a->path, SOCK_SEQPACKET);
		}
		usleep(10000);
	}
}

/* Asks for sessions 1..64 with a wrong token, as fast as it can. */
static void guess(void *arg)
{
	const attack *a = arg;
	unsigned char req[8 + 16 + 1] = {0};

	for (uint64_t n = 0;; n++) {
		uint64_t id = htole64(1 + n % 64);
		int s = mb_hostile_connect(a->path, SOCK_SEQPACKET);
		if (s < 0) {
			usleep(1000);
			continue;
		}
		memcpy(req, &id, 8);
		req[8] = (unsigned char)n; /* a token, wrong */
		(void)!send(s, req, sizeof(req), MSG_NOSIGNAL);
		char status;
		(void)!recv(s, &status, 1, 0);
		close(s);
	}
}

static long log_size(const mb_test_broker *b)
{
	struct stat st;
	return stat(b->log, &st) == 0 ? (long)st.st_size : -1;
}

static void run_attack(void (*fn)(void *arg), const char *what)
{
	const char *args[] = {"--budget", "256M", NULL};
	mb_test_broker b;
	attack a;
	long worst = 0, ms;

	assert_int_equal(mb_test_broker_start(&b, args), 0);
	long bound = mb_hostile_honest_bound(b.address, HONEST_BYTES);
	int fds, sockets;
	mb_hostile_baseline(b.pid, &fds, &sockets);
	mb_hostile_path_with(&b, ".fd", a.path, sizeof(a.path));
	long log_before = log_size(&b);
	long long t0 = mb_hostile_now_ms();
	pid_t attacker = mb_hostile_fork(fn, &a);
	assert_true(attacker > 0);
	usleep(500000);
	for (int i = 0; i < HONEST_ROUNDS; i++) {
		assert_int_equal(mb_hostile_honest(b.address, HONEST_BYTES, &ms), 0);
		if (ms > worst)
			worst = ms;
	}
	mb_hostile_kill(attacker);
	long long seconds = (mb_hostile_now_ms() - t0) / 1000 + 1;
	long grown = log_size(&b) - log_before;
	printf("%s: slowest honest connect+commit %ld ms; log grew %ld bytes in %lld s\n", what,
	       worst, grown, seconds);
	printf("allowed: %ld ms (20 times the slowest without the attack, at least 2 s)\n", bound);
	assert_true(worst <= bound);
	/* At most MB_LOG_BURST lines a second of ~150 bytes, with room to spare. */
	assert_true(grown <= seconds * 20 * 200 + 4096);

	int now = mb_hostile_wait_fds(b.pid, fds, 30000);
	assert_true(now <= fds);
	assert_int_equal(mb_test_broker_stop(&b), 0);
}

static void test_silent_peers(void **state)
{
	(void)state;
	run_attack(silent, "silent peers");
}

static void test_token_guessing(void **state)
{
	(void)state;
	run_attack(guess, "token guessing");
}

int main(int argc, char **argv)
{
	mb_hostile_roles(argc, argv);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_silent_peers),
	    cmocka_unit_test(test_token_guessing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
