/*
 * test_lifecycle.c: what survives what. A broker that dies or stops leaves clients' memory mapped
 * and intact, their calls fail with HOST_E_CLRNOTAVAILABLE without hanging, and their next call
 * after a new broker starts reconnects, hands the section back and re-registers every
 * reservation and commit. A client killed with SIGKILL has its memory back in the budget, even
 * while a forked child of it still holds its connection.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "membroker.h"
/* To drop a client's connection from underneath it, as a wedged or broken connection does. */
#include "../client/client_internal.h"
#include "lsan_nng.h"

#define MiB ((size_t)1 << 20)

static const char *self_path;

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool call_fails_unavailable(void *arg)
{
	DWORD load;
	SIZE_T avail;
	return mb_get_memory_load(arg, &load, &avail) == HOST_E_CLRNOTAVAILABLE;
}

static bool call_succeeds(void *arg)
{
	DWORD load;
	SIZE_T avail;
	return mb_get_memory_load(arg, &load, &avail) == S_OK;
}

static void check_pattern(const uint8_t *p, size_t n, uint8_t seed)
{
	for (size_t i = 0; i < n; i += 4096)
		assert_int_equal(p[i], (uint8_t)(seed + i / 4096));
}

static void fill_pattern(uint8_t *p, size_t n, uint8_t seed)
{
	for (size_t i = 0; i < n; i += 4096)
		p[i] = (uint8_t)(seed + i / 4096);
}

static void restart_case(bool kill_hard)
{
	mb_test_broker b;
	mb_client *c;
	void *base = NULL, *mem = NULL;
	MEMORY_BASIC_INFORMATION mbi;
	SIZE_T written;
	mb_session_status st;
	char address[sizeof(b.address)];

	assert_int_equal(mb_test_broker_start(&b, (const char *[]){"--budget", "64M", NULL}), 0);
	snprintf(address, sizeof(address), "%s", b.address);
	assert_int_equal(mb_connect(address, &c), S_OK);
	assert_int_equal(
	    mb_virtual_alloc(c, NULL, 4 * MiB, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &base),
	    S_OK);
	assert_int_equal(
	    mb_virtual_alloc(c, base, 2 * MiB, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &mem),
	    S_OK);
	fill_pattern(mem, 2 * MiB, 7);

	if (kill_hard) {
		mb_test_broker_kill(&b);
	} else {
		/* A clean stop must not take the clients' memory with it either. */
		int status = -1;
		kill(b.pid, SIGTERM);
		assert_int_equal(waitpid(b.pid, &status, 0), b.pid);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		b.pid = -1;
	}

	/* Memory intact and usable; calls fail promptly; VirtualQuery still answers locally. */
	check_pattern(mem, 2 * MiB, 7);
	fill_pattern(mem, MiB, 9);
	assert_true(mb_test_wait_for(call_fails_unavailable, c, 20000));
	void *more = NULL;
	assert_int_equal(mb_virtual_alloc(c, (uint8_t *)base + 2 * MiB, MiB, MEM_COMMIT,
					  PAGE_READWRITE, eTaskCritical, &more),
			 HOST_E_CLRNOTAVAILABLE);
	assert_int_equal(mb_virtual_query(c, base, &mbi, sizeof(mbi), &written), S_OK);
	assert_int_equal(mbi.State, MEM_COMMIT);
	assert_int_equal(mbi.RegionSize, 2 * MiB);

	/* A new broker on the same address: the next call reconnects by itself. */
	assert_int_equal(
	    mb_test_broker_start_at(&b, address, (const char *[]){"--budget", "64M", NULL}), 0);
	assert_true(mb_test_wait_for(call_succeeds, c, 20000));
	assert_int_equal(mb_get_session_status(c, &st), S_OK);
	assert_int_equal(st.committed, 2 * MiB);
	assert_int_equal(st.total_committed, 2 * MiB);
	assert_int_equal(st.reserved, 4 * MiB);
	assert_int_equal(st.reservations, 1);
	/* The broker has the client's own section again: it sees the pages. */
	assert_true(st.section_allocated > 0 && st.section_allocated <= 2 * MiB);
	check_pattern(mem, MiB, 9);
	check_pattern((uint8_t *)mem + MiB, MiB, (uint8_t)(7 + 256));

	/* It is all managed as before: commit more, decommit (the new broker frees the pages). */
	assert_int_equal(mb_virtual_alloc(c, (uint8_t *)base + 2 * MiB, MiB, MEM_COMMIT,
					  PAGE_READWRITE, eTaskCritical, &more),
			 S_OK);
	assert_int_equal(mb_virtual_free(c, mem, 2 * MiB, MEM_DECOMMIT), S_OK);
	assert_int_equal(
	    mb_virtual_alloc(c, mem, 4096, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &mem), S_OK);
	assert_int_equal(((uint8_t *)mem)[0], 0);
	assert_int_equal(mb_get_session_status(c, &st), S_OK);
	assert_int_equal(st.committed, MiB + 4096);
	assert_int_equal(mb_virtual_free(c, base, 0, MEM_RELEASE), S_OK);
	assert_int_equal(mb_get_session_status(c, &st), S_OK);
	assert_int_equal(st.committed, 0);
	assert_int_equal(st.section_allocated, 0);
	mb_disconnect(c);
	mb_test_broker_stop(&b);
}

static void test_broker_killed_and_restarted(void **state)
{
	(void)state;
	restart_case(true);
}

static void test_broker_stopped_and_restarted(void **state)
{
	(void)state;
	restart_case(false);
}

/*
 * VirtualFree racing the broker's death: the library learns of a lost connection asynchronously,
 * so a free may find the broker gone before it starts (it then changes nothing and says
 * HOST_E_CLRNOTAVAILABLE) or lose the connection while its request is out (the pages already left
 * this process's map, which is what the next session learns: it has happened and says S_OK). Either
 * way what the caller is told, what VirtualQuery says and what the next broker books must agree:
 * a host told a free failed must find the pages still there, and one told it succeeded must not be
 * charged for them.
 */
static void test_free_racing_broker_death(void **state)
{
	mb_test_broker b;
	mb_client *c;
	void *base = NULL, *mem = NULL;
	MEMORY_BASIC_INFORMATION mbi;
	SIZE_T written;
	mb_session_status st;
	char address[sizeof(b.address)];
	int freed = 0, refused = 0;

	(void)state;
	assert_int_equal(mb_test_broker_start(&b, (const char *[]){"--budget", "64M", NULL}), 0);
	snprintf(address, sizeof(address), "%s", b.address);
	assert_int_equal(mb_connect(address, &c), S_OK);
	assert_int_equal(
	    mb_virtual_alloc(c, NULL, 4 * MiB, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &base),
	    S_OK);
	for (int round = 0; round < 12; round++) {
		bool release = round % 3 == 2;
		void *other = NULL;

		assert_int_equal(
		    mb_virtual_alloc(c, base, MiB, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &mem),
		    S_OK);
		fill_pattern(mem, MiB, (uint8_t)round);
		if (release) {
			assert_int_equal(mb_virtual_alloc(c, NULL, MiB, MEM_RESERVE | MEM_COMMIT,
							  PAGE_READWRITE, eTaskCritical, &other),
					 S_OK);
			fill_pattern(other, MiB, 99);
		}
		/* Everything reported before the broker goes (a status call syncs). */
		assert_int_equal(mb_get_session_status(c, &st), S_OK);
		assert_int_equal(st.committed, release ? 2 * MiB : MiB);

		mb_test_broker_kill(&b);
		void *target = release ? other : mem;
		HRESULT hr = release ? mb_virtual_free(c, other, 0, MEM_RELEASE)
				     : mb_virtual_free(c, mem, MiB, MEM_DECOMMIT);
		assert_true(hr == S_OK || hr == HOST_E_CLRNOTAVAILABLE);
		assert_int_equal(mb_virtual_query(c, target, &mbi, sizeof(mbi), &written), S_OK);
		if (hr == S_OK) {
			freed++;
			assert_int_equal(mbi.State, release ? MEM_FREE : MEM_RESERVE);
		} else {
			refused++;
			assert_int_equal(mbi.State, MEM_COMMIT);
			check_pattern(target, MiB, release ? 99 : (uint8_t)round);
		}

		assert_int_equal(
		    mb_test_broker_start_at(&b, address, (const char *[]){"--budget", "64M", NULL}),
		    0);
		assert_true(mb_test_wait_for(call_succeeds, c, 20000));
		assert_int_equal(mb_get_session_status(c, &st), S_OK);
		uint64_t want = (hr == S_OK ? 0 : MiB) + (release ? MiB : 0);
		assert_int_equal(st.committed, want);
		assert_int_equal(st.total_committed, want);
		assert_true(st.section_allocated <= want);
		/* Back to one reservation with nothing committed for the next round. */
		if (release && hr != S_OK)
			assert_int_equal(mb_virtual_free(c, other, 0, MEM_RELEASE), S_OK);
		if (release || hr != S_OK)
			assert_int_equal(mb_virtual_free(c, mem, MiB, MEM_DECOMMIT), S_OK);
		assert_int_equal(mb_get_session_status(c, &st), S_OK);
		assert_int_equal(st.committed, 0);
	}
	print_message("free racing the broker's death: %d freed, %d refused\n", freed, refused);
	assert_int_equal(mb_virtual_free(c, base, 0, MEM_RELEASE), S_OK);
	mb_disconnect(c);
	mb_test_broker_stop(&b);
}

static void on_level(EMemoryAvailable level, void *ctx)
{
	(void)level;
	(void)ctx;
}

typedef struct total_at {
	mb_client *observer;
	uint64_t want;
} total_at;

static bool total_is(void *arg);

static void test_idle_client_with_callback_is_counted_again(void **state)
{
	mb_test_broker b;
	mb_client *idle, *observer;
	void *p = NULL;
	char address[sizeof(b.address)];
	total_at t;

	(void)state;
	assert_int_equal(mb_test_broker_start(&b, (const char *[]){"--budget", "64M", NULL}), 0);
	snprintf(address, sizeof(address), "%s", b.address);
	assert_int_equal(mb_connect(address, &idle), S_OK);
	assert_int_equal(mb_register_memory_notification(idle, on_level, NULL), S_OK);
	assert_int_equal(mb_virtual_alloc(idle, NULL, 3 * MiB, MEM_RESERVE | MEM_COMMIT,
					  PAGE_READWRITE, eTaskCritical, &p),
			 S_OK);
	mb_test_broker_kill(&b);
	assert_int_equal(
	    mb_test_broker_start_at(&b, address, (const char *[]){"--budget", "64M", NULL}), 0);
	/* The idle client makes no call: its notification thread brings it back. */
	assert_int_equal(mb_connect(address, &observer), S_OK);
	t.observer = observer;
	t.want = 3 * MiB;
	assert_true(mb_test_wait_for(total_is, &t, 20000));
	mb_disconnect(idle);
	t.want = 0;
	assert_true(mb_test_wait_for(total_is, &t, 20000));
	mb_disconnect(observer);
	mb_test_broker_stop(&b);
}

/* --- client death --- */

static bool total_is(void *arg)
{
	total_at *t = arg;
	mb_session_status st;
	return mb_get_session_status(t->observer, &st) == S_OK && st.total_committed == t->want;
}

/* Child mode: connect, commit and touch `mib` MiB, optionally fork a holder of the connection,
 * report readiness on fd 3 and sleep until killed. */
static int child_main(const char *address, int mib, bool fork_holder, bool drop)
{
	mb_client *c;
	void *p = NULL;
	char ok = 'k';

	pid_t holder = 0;

	if (mb_connect(address, &c) != S_OK)
		return 10;
	if (mb_virtual_alloc(c, NULL, (size_t)mib * MiB, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
			     eTaskCritical, &p) != S_OK)
		return 11;
	memset(p, 0x33, (size_t)mib * MiB);
	if (drop) {
		/* Its connection drops, and it makes no call that would re-attach. */
		nng_pipe pipe = NNG_PIPE_INITIALIZER;
		pipe.id = atomic_load(&c->session_pipe);
		if (nng_pipe_close(pipe) != 0)
			return 13;
	}
	if (fork_holder && (holder = fork()) == 0) {
		/* Inherits the connection's socket and keeps it open; never touches nng. Ends by
		 * itself should the test not get to kill it. */
		alarm(60);
		for (;;)
			pause();
	}
	if (write(3, &ok, 1) != 1 || write(3, &holder, sizeof(holder)) != sizeof(holder))
		return 12;
	for (;;)
		pause();
}

static pid_t spawn_child(const char *address, int mib, const char *mode, pid_t *holder)
{
	int fds[2];
	char mibs[16], ch;
	pid_t pid;

	assert_int_equal(pipe(fds), 0);
	snprintf(mibs, sizeof(mibs), "%d", mib);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(fds[1], 3);
		/* A fresh process: nng may not be used after fork in this one. */
		execl(self_path, self_path, "--child", address, mibs, mode, (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	assert_int_equal(read(fds[0], &ch, 1), 1);
	assert_int_equal(read(fds[0], holder, sizeof(*holder)), sizeof(*holder));
	close(fds[0]);
	return pid;
}

static void death_case(bool fork_holder)
{
	mb_test_broker b;
	mb_client *observer;
	total_at t;
	pid_t child, holder = 0;

	assert_int_equal(mb_test_broker_start(&b, (const char *[]){"--budget", "256M", NULL}), 0);
	assert_int_equal(mb_connect(b.address, &observer), S_OK);
	child = spawn_child(b.address, 32, fork_holder ? "hold" : "alone", &holder);
	t.observer = observer;
	t.want = 32 * MiB;
	assert_true(mb_test_wait_for(total_is, &t, 20000));

	kill(child, SIGKILL);
	assert_int_equal(waitpid(child, NULL, 0), child);
	/* Back in the budget although (with fork_holder) a grandchild still holds the socket. */
	t.want = 0;
	assert_true(mb_test_wait_for(total_is, &t, 20000));

	if (holder > 0) {
		/* The holder still has the connection open: the pidfd, not the socket, did it. */
		assert_int_equal(kill(holder, 0), 0);
		kill(holder, SIGKILL);
	}
	mb_disconnect(observer);
	mb_test_broker_stop(&b);
}

/*
 * The connection drops while the broker and the client live on (the library closes a connection
 * whose send is wedged; a network namespace hiccup): the client reconnects to the same broker and
 * must find its memory intact, charged again, and usable.
 */
static void test_dropped_connection_keeps_memory(void **state)
{
	mb_test_broker b;
	mb_client *c;
	void *base = NULL, *mem = NULL;
	mb_session_status st;

	(void)state;
	assert_int_equal(mb_test_broker_start(&b, (const char *[]){"--budget", "64M", NULL}), 0);
	assert_hr(mb_connect(b.address, &c), S_OK);
	assert_hr(
	    mb_virtual_alloc(c, NULL, 4 * MiB, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &base),
	    S_OK);
	/* One round-trip commit and, from its credit, a local one. */
	assert_hr(mb_virtual_alloc(c, base, MiB, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &mem),
		  S_OK);
	assert_hr(mb_virtual_alloc(c, (uint8_t *)base + MiB, MiB, MEM_COMMIT, PAGE_READWRITE,
				   eTaskCritical, &mem),
		  S_OK);
	fill_pattern(base, 2 * MiB, 3);

	nng_pipe p = NNG_PIPE_INITIALIZER;
	p.id = atomic_load(&c->session_pipe);
	assert_int_equal(nng_pipe_close(p), 0);
	/* The next calls reconnect by themselves (the first may see the loss). */
	assert_true(mb_test_wait_for(call_succeeds, c, 20000));
	assert_int_equal(c->reconnects, 1);
	/* The broker kept the section and its books: re-attached, nothing registered again. */
	assert_int_equal(c->reattaches, 1);
	check_pattern(base, 2 * MiB, 3);
	assert_hr(mb_get_session_status(c, &st), S_OK);
	assert_int_equal(st.committed, 2 * MiB);
	assert_int_equal(st.total_committed, 2 * MiB);
	assert_int_equal(st.offences, 0);
	/* Still usable: decommit, commit again (reads zero), release. */
	assert_hr(mb_virtual_free(c, base, MiB, MEM_DECOMMIT), S_OK);
	assert_hr(mb_virtual_alloc(c, base, MiB, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &mem),
		  S_OK);
	assert_int_equal(((uint8_t *)base)[4096], 0);
	check_pattern((uint8_t *)base + MiB, MiB, (uint8_t)(3 + 256));
	assert_hr(mb_virtual_free(c, base, 0, MEM_RELEASE), S_OK);
	mb_disconnect(c);
	assert_int_equal(mb_test_broker_stop(&b), 0);
}

/*
 * A client whose connection drops and who makes no call to re-attach: its section is detached and
 * stays charged (the budget counts it, nobody else gets its memory) until its process exits; then
 * it is freed at once.
 */
static void test_exit_while_detached(void **state)
{
	mb_test_broker b;
	mb_client *observer;
	mb_session_status st;
	total_at t;
	pid_t child, holder = 0;
	void *p = NULL;

	(void)state;
	assert_int_equal(mb_test_broker_start(&b, (const char *[]){"--budget", "256M", NULL}), 0);
	assert_int_equal(mb_connect(b.address, &observer), S_OK);
	child = spawn_child(b.address, 160, "drop", &holder);
	t.observer = observer;
	t.want = 160 * MiB;
	assert_true(mb_test_wait_for(total_is, &t, 20000));
	/* Detached, still charged: sampled for a while, and what is left of the task ceiling
	 * (230.4 MiB) is all another client gets. */
	for (int i = 0; i < 20; i++) {
		assert_hr(mb_get_session_status(observer, &st), S_OK);
		assert_int_equal(st.total_committed, 160 * MiB);
		usleep(50000);
	}
	assert_hr(mb_virtual_alloc(observer, NULL, 96 * MiB, MEM_RESERVE | MEM_COMMIT,
				   PAGE_READWRITE, eTaskCritical, &p),
		  E_OUTOFMEMORY);
	assert_hr(mb_virtual_alloc(observer, NULL, 64 * MiB, MEM_RESERVE | MEM_COMMIT,
				   PAGE_READWRITE, eTaskCritical, &p),
		  S_OK);
	assert_hr(mb_get_session_status(observer, &st), S_OK);
	assert_true(st.total_committed <= st.budget);
	assert_hr(mb_virtual_free(observer, p, 0, MEM_RELEASE), S_OK);

	long long t0 = now_ms();
	kill(child, SIGKILL);
	assert_int_equal(waitpid(child, NULL, 0), child);
	t.want = 0;
	assert_true(mb_test_wait_for(total_is, &t, 20000));
	printf("detached section freed %lld ms after its process was killed\n", now_ms() - t0);
	mb_disconnect(observer);
	assert_int_equal(mb_test_broker_stop(&b), 0);
}

static void test_killed_client_memory_returns(void **state)
{
	(void)state;
	death_case(false);
}

static void test_killed_client_with_forked_holder(void **state)
{
	(void)state;
	death_case(true);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_broker_killed_and_restarted),
	    cmocka_unit_test(test_free_racing_broker_death),
	    cmocka_unit_test(test_broker_stopped_and_restarted),
	    cmocka_unit_test(test_idle_client_with_callback_is_counted_again),
	    cmocka_unit_test(test_dropped_connection_keeps_memory),
	    cmocka_unit_test(test_exit_while_detached),
	    cmocka_unit_test(test_killed_client_memory_returns),
	    cmocka_unit_test(test_killed_client_with_forked_holder),
	};

	self_path = argv[0];
	if (argc == 5 && strcmp(argv[1], "--child") == 0)
		return child_main(argv[2], atoi(argv[3]), strcmp(argv[4], "hold") == 0,
				  strcmp(argv[4], "drop") == 0);
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
