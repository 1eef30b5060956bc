/*
 * test_arbitration.c: the broker's budget and critical-level arbitration, seen from several clients
 * of the real membrokerd: level ceilings, waits (granted, timed out, abandoned), no head-of-line
 * blocking, memory-pressure notifications with hysteresis, GetMemoryLoad, reclaim of MEM_RESET
 * pages, the audit of pages written without a commit, and the ledger under concurrent load.
 *
 * Every test starts its own broker with the options it needs (fixture: stopped in teardown, also
 * after a failed assertion). Several clients in this one process are separate sessions. Waiting
 * commits run on threads; threads never assert, the main thread checks what they recorded.
 *
 * No test asserts a duration: every wait for the broker is a poll with a generous limit, and every
 * wait the broker is asked to make is either much longer than the test needs (so it cannot expire
 * early on a loaded machine) or is meant to expire (and only its result is checked).
 *
 * The session figures (waiters, pressure, reclaimed and offences included) come from the public
 * mb_get_session_status.
 *
 * Environment, for debugging: ARB_FILTER=<cmocka filter> runs only matching tests;
 * ARB_KEEP_LOGS=<dir> keeps a copy of every broker's log.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "membroker.h"

#define PAGE ((uint64_t)4096)
#define MiB  ((uint64_t)1024 * 1024)

#define BUDGET_64M ((uint64_t)64 * MiB)

/* Generous limits for polls: the conditions normally hold within milliseconds. */
#define WAIT_MS	     15000
#define LONG_WAIT_MS 30000

/* ---- assertion helpers ---- */

#define assert_waited(cond, arg, ms, what)                                                         \
	do {                                                                                       \
		if (!mb_test_wait_for((cond), (arg), (ms))) {                                      \
			print_error("%s:%d: gave up after %d ms waiting for %s\n", __FILE__,       \
				    __LINE__, (int)(ms), (what));                                  \
			_fail(__FILE__, __LINE__);                                                 \
		}                                                                                  \
	} while (0)

/* ---- the session's figures, all of them ---- */

typedef mb_session_status arb_status;

/* Never asserts: usable from any thread. */
static HRESULT status_try(mb_client *c, arb_status *st)
{
	memset(st, 0, sizeof(*st));
	return mb_get_session_status(c, st);
}

static arb_status status(mb_client *c)
{
	arb_status st;
	assert_hr(status_try(c, &st), S_OK);
	return st;
}

/* ---- budget arithmetic, as the brief states it ---- */

/* A level's ceiling: permille of the budget, rounded down. */
static uint64_t ceiling_of(uint64_t budget, unsigned permille)
{
	return budget / 1000 * permille + budget % 1000 * permille / 1000;
}

static uint64_t pages_below(uint64_t bytes)
{
	return bytes / PAGE * PAGE;
}

/* ---- fixture: one broker, its clients and the test's threads ---- */

#define MAX_CLIENTS 16
#define MAX_THREADS 16

typedef struct notes {
	pthread_mutex_t lock;
	int count;
	EMemoryAvailable levels[64];
} notes;

typedef struct fx {
	mb_test_broker broker;
	bool running;
	mb_client *clients[MAX_CLIENTS];
	int nclients;
	pthread_t threads[MAX_THREADS];
	bool joined[MAX_THREADS];
	int nthreads;
	notes notes;
} fx;

static int fx_setup(void **state)
{
	fx *f = calloc(1, sizeof(*f));
	if (f == NULL)
		return -1;
	pthread_mutex_init(&f->notes.lock, NULL);
	*state = f;
	return 0;
}

/* ARB_KEEP_LOGS=dir keeps a copy of each broker's log (taken just before it is stopped). */
static void fx_keep_log(fx *f)
{
	static int seq;
	const char *dir = getenv("ARB_KEEP_LOGS");
	char cmd[600];

	if (dir == NULL || f->broker.log[0] == '\0')
		return;
	snprintf(cmd, sizeof(cmd), "mkdir -p '%s' && cp '%s' '%s/broker-%02d.log'", dir,
		 f->broker.log, dir, ++seq);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot keep %s\n", f->broker.log);
}

static void fx_stop_broker(fx *f)
{
	if (f->running) {
		f->running = false;
		fx_keep_log(f);
		mb_test_broker_stop(&f->broker);
	}
}

static int fx_teardown(void **state)
{
	fx *f = *state;

	/* Stopping the broker first ends every wait, so the threads return. */
	fx_stop_broker(f);
	for (int i = 0; i < f->nthreads; i++)
		if (!f->joined[i])
			pthread_join(f->threads[i], NULL);
	for (int i = 0; i < f->nclients; i++)
		mb_disconnect(f->clients[i]);
	pthread_mutex_destroy(&f->notes.lock);
	free(f);
	return 0;
}

static void fx_start(fx *f, const char *const *args)
{
	assert_int_equal(mb_test_broker_start(&f->broker, args), 0);
	f->running = true;
}

static mb_client *fx_connect(fx *f)
{
	mb_client *c = NULL;
	assert_true(f->nclients < MAX_CLIENTS);
	assert_hr(mb_connect(f->broker.address, &c), S_OK);
	assert_non_null(c);
	f->clients[f->nclients++] = c;
	return c;
}

static int fx_spawn(fx *f, void *(*fn)(void *), void *arg)
{
	assert_true(f->nthreads < MAX_THREADS);
	int i = f->nthreads;
	assert_int_equal(pthread_create(&f->threads[i], NULL, fn, arg), 0);
	f->joined[i] = false;
	f->nthreads++;
	return i;
}

static void fx_join(fx *f, int i)
{
	assert_false(f->joined[i]);
	assert_int_equal(pthread_join(f->threads[i], NULL), 0);
	f->joined[i] = true;
}

/* ---- allocation helpers ---- */

static uint8_t *reserve(mb_client *c, uint64_t size)
{
	void *mem = NULL;
	assert_hr(mb_virtual_alloc(c, NULL, (SIZE_T)size, MEM_RESERVE, PAGE_READWRITE,
				   eTaskCritical, &mem),
		  S_OK);
	assert_non_null(mem);
	return mem;
}

static HRESULT commit(mb_client *c, void *addr, uint64_t size, EMemoryCriticalLevel level)
{
	void *mem = NULL;
	return mb_virtual_alloc(c, addr, (SIZE_T)size, MEM_COMMIT, PAGE_READWRITE, level, &mem);
}

static HRESULT decommit(mb_client *c, void *addr, uint64_t size)
{
	return mb_virtual_free(c, addr, (SIZE_T)size, MEM_DECOMMIT);
}

static DWORD state_at(mb_client *c, const void *addr)
{
	MEMORY_BASIC_INFORMATION mbi;
	SIZE_T written = 0;
	assert_hr(mb_virtual_query(c, addr, &mbi, sizeof(mbi), &written), S_OK);
	return mbi.State;
}

/* ---- a commit on its own thread ---- */

typedef struct waiter {
	mb_client *client;
	void *addr;
	uint64_t size;
	EMemoryCriticalLevel level;
	HRESULT hr;
	atomic_bool done;
	int thread;
} waiter;

static void *waiter_main(void *arg)
{
	waiter *w = arg;
	w->hr = commit(w->client, w->addr, w->size, w->level);
	atomic_store(&w->done, true);
	return NULL;
}

static void start_waiter(fx *f, waiter *w, mb_client *c, void *addr, uint64_t size,
			 EMemoryCriticalLevel level)
{
	w->client = c;
	w->addr = addr;
	w->size = size;
	w->level = level;
	w->hr = E_UNEXPECTED;
	atomic_init(&w->done, false);
	w->thread = fx_spawn(f, waiter_main, w);
}

/* ---- poll conditions ---- */

typedef struct status_cond {
	mb_client *client;
	uint32_t waiters;
	uint32_t offences;
	uint64_t total;
} status_cond;

static bool waiters_are(void *arg)
{
	status_cond *sc = arg;
	arb_status st;
	return status_try(sc->client, &st) == S_OK && st.waiters == sc->waiters;
}

static void wait_for_waiters(mb_client *observer, uint32_t n)
{
	status_cond sc = {.client = observer, .waiters = n};
	char what[64];
	snprintf(what, sizeof(what), "status.waiters == %u", n);
	assert_waited(waiters_are, &sc, LONG_WAIT_MS, what);
}

/* ---- 1. ceilings per level ---- */

static void test_level_ceilings(void **state)
{
	fx *f = *state;
	fx_start(f, (const char *[]){"--budget", "64M", NULL});
	mb_client *a = fx_connect(f);
	mb_client *b = fx_connect(f);
	const uint64_t task_limit = pages_below(ceiling_of(BUDGET_64M, 900));
	const uint64_t app_limit = pages_below(ceiling_of(BUDGET_64M, 970));

	arb_status st = status(a);
	assert_u64(st.budget, BUDGET_64M);
	assert_u64(st.total_committed, 0);

	/* eTaskCritical: 1 MiB commits, then the pages that still fit under 90%. */
	uint8_t *ra = reserve(a, BUDGET_64M);
	uint64_t done = 0;
	while (done + MiB <= task_limit) {
		assert_hr(commit(a, ra + done, MiB, eTaskCritical), S_OK);
		done += MiB;
		assert_u64_le(status(a).total_committed, BUDGET_64M);
	}
	if (done < task_limit)
		assert_hr(commit(a, ra + done, task_limit - done, eTaskCritical), S_OK);
	done = task_limit;
	st = status(a);
	assert_u64(st.total_committed, task_limit);
	assert_u64(st.committed, task_limit);

	/* One page more at eTaskCritical: refused, never waits (wait 0). */
	assert_hr(commit(a, ra + done, PAGE, eTaskCritical), E_OUTOFMEMORY);
	assert_u64(state_at(a, ra + done), MEM_RESERVE);
	assert_u64(status(a).total_committed, task_limit);

	/* eAppDomainCritical (another client): fits under 97% at once. */
	uint8_t *rb = reserve(b, BUDGET_64M);
	assert_hr(commit(b, rb, app_limit - task_limit, eAppDomainCritical), S_OK);
	st = status(b);
	assert_u64(st.total_committed, app_limit);
	assert_u64(st.committed, app_limit - task_limit);
	assert_u64(st.waiters, 0);
	/* eTaskCritical is still refused, now far above its ceiling. */
	assert_hr(commit(a, ra + done, PAGE, eTaskCritical), E_OUTOFMEMORY);

	/* eProcessCritical: the rest of the budget, exactly. */
	assert_hr(
	    commit(b, rb + (app_limit - task_limit), BUDGET_64M - app_limit, eProcessCritical),
	    S_OK);
	st = status(b);
	assert_u64(st.total_committed, BUDGET_64M);
	assert_u64(st.committed, BUDGET_64M - task_limit);
	assert_u64(status(a).committed, task_limit);

	/* Nothing is left, not even for eProcessCritical: it waits (2 s default) and times out. */
	uint8_t *last = rb + (BUDGET_64M - task_limit);
	assert_hr(commit(b, last, PAGE, eProcessCritical), HOST_E_TIMEOUT);
	assert_hr(commit(b, last, PAGE, eTaskCritical), E_OUTOFMEMORY);
	st = status(b);
	assert_u64(st.total_committed, BUDGET_64M);
	assert_u64(st.committed, BUDGET_64M - task_limit);
	assert_u64(st.waiters, 0);

	/* The public status agrees with the raw reply. */
	mb_session_status pub;
	assert_hr(mb_get_session_status(b, &pub), S_OK);
	assert_u64(pub.budget, BUDGET_64M);
	assert_u64(pub.total_committed, BUDGET_64M);
	assert_u64(pub.committed, BUDGET_64M - task_limit);
	assert_int_equal(pub.sessions, 2);

	/* The memory really is usable at both ends. */
	ra[0] = 1;
	ra[task_limit - 1] = 2;
	rb[0] = 3;
	rb[BUDGET_64M - task_limit - 1] = 4;
	assert_int_equal(ra[0] + ra[task_limit - 1] + rb[0] + rb[BUDGET_64M - task_limit - 1], 10);
}

/* ---- 2. a wait that never gets memory ---- */

static void test_appdomain_wait_times_out(void **state)
{
	fx *f = *state;
	fx_start(f, (const char *[]){"--budget", "64M", NULL}); /* default waits 0,250,2000 */
	mb_client *a = fx_connect(f);
	mb_client *b = fx_connect(f);
	const uint64_t task_limit = pages_below(ceiling_of(BUDGET_64M, 900));

	uint8_t *ra = reserve(a, BUDGET_64M);
	assert_hr(commit(a, ra, task_limit, eTaskCritical), S_OK);

	/* 8 MiB more would pass 97%: waits 250 ms, nobody frees anything. */
	uint8_t *rb = reserve(b, 8 * MiB);
	assert_hr(commit(b, rb, 8 * MiB, eAppDomainCritical), HOST_E_TIMEOUT);
	arb_status st = status(b);
	assert_u64(st.total_committed, task_limit);
	assert_u64(st.committed, 0);
	assert_u64(st.waiters, 0);
	assert_u64(state_at(b, rb), MEM_RESERVE);
	assert_u64(status(a).committed, task_limit);

	/* A request larger than the level's ceiling can never fit: refused without a wait. */
	uint8_t *big = reserve(b, 80 * MiB);
	assert_hr(commit(b, big, 63 * MiB, eAppDomainCritical), E_OUTOFMEMORY);
	assert_hr(commit(b, big, 65 * MiB, eProcessCritical), E_OUTOFMEMORY);
	st = status(b);
	assert_u64(st.total_committed, task_limit);
	assert_u64(st.committed, 0);
	assert_u64(st.waiters, 0);
}

/* ---- 3. a wait granted when another client frees memory ---- */

static void test_process_wait_granted_by_decommit(void **state)
{
	fx *f = *state;
	fx_start(f, (const char *[]){"--budget", "64M", "--waits", "0,250,20000", NULL});
	mb_client *a = fx_connect(f);
	mb_client *b = fx_connect(f);
	static waiter w;

	uint8_t *ra = reserve(a, BUDGET_64M);
	assert_hr(commit(a, ra, BUDGET_64M, eProcessCritical), S_OK);
	uint8_t *rb = reserve(b, 4 * MiB);

	start_waiter(f, &w, b, rb, 4 * MiB, eProcessCritical);
	wait_for_waiters(a, 1);
	assert_false(atomic_load(&w.done));
	arb_status st = status(a);
	assert_u64(st.total_committed, BUDGET_64M);
	assert_u64(st.pressure, eMemoryAvailableLow);
	/* The waiting commit answers queries locally meanwhile. */
	assert_u64(state_at(b, rb), MEM_RESERVE);

	assert_hr(decommit(a, ra + 56 * MiB, 8 * MiB), S_OK);
	fx_join(f, w.thread);
	assert_hr(w.hr, S_OK);

	st = status(a);
	assert_u64(st.total_committed, 60 * MiB);
	assert_u64(st.committed, 56 * MiB);
	assert_u64(st.waiters, 0);
	st = status(b);
	assert_u64(st.committed, 4 * MiB);
	assert_u64(st.total_committed, 60 * MiB);
	assert_u64(state_at(b, rb), MEM_COMMIT);
	rb[0] = 0x11;
	rb[4 * MiB - 1] = 0x22;
	assert_int_equal(rb[0] + rb[4 * MiB - 1], 0x33);
}

/* ---- 4. no head-of-line blocking ---- */

static void test_no_head_of_line_blocking(void **state)
{
	fx *f = *state;
	/* Waits far longer than the test needs, so neither waiter can expire early. */
	fx_start(f, (const char *[]){"--budget", "64M", "--waits", "0,20000,20000", NULL});
	mb_client *a = fx_connect(f);
	mb_client *b = fx_connect(f);
	mb_client *c = fx_connect(f);
	static waiter big, small;

	uint8_t *ra = reserve(a, BUDGET_64M);
	assert_hr(commit(a, ra, BUDGET_64M, eProcessCritical), S_OK);
	uint8_t *rb = reserve(b, 16 * MiB);
	uint8_t *rc = reserve(c, MiB);

	/* The big one first (higher level, older): it is looked at first on every grant. */
	start_waiter(f, &big, b, rb, 16 * MiB, eProcessCritical);
	wait_for_waiters(a, 1);
	start_waiter(f, &small, c, rc, MiB, eAppDomainCritical);
	wait_for_waiters(a, 2);

	/* 4 MiB back: 60 MiB committed; the big one needs 16, the small one fits under 97%. */
	assert_hr(decommit(a, ra + 60 * MiB, 4 * MiB), S_OK);
	fx_join(f, small.thread);
	assert_hr(small.hr, S_OK);
	arb_status st = status(a);
	assert_u64(st.waiters, 1);
	assert_false(atomic_load(&big.done));
	assert_u64(st.total_committed, 61 * MiB);
	assert_u64(status(b).committed, 0);
	assert_u64(status(c).committed, MiB);

	/* 16 MiB more back: now the big one fits under 100% and is granted. */
	assert_hr(decommit(a, ra + 44 * MiB, 16 * MiB), S_OK);
	fx_join(f, big.thread);
	assert_hr(big.hr, S_OK);
	st = status(a);
	assert_u64(st.waiters, 0);
	assert_u64(st.total_committed, 61 * MiB);
	assert_u64(st.committed, 44 * MiB);
	assert_u64(status(b).committed, 16 * MiB);
	assert_u64(status(c).committed, MiB);
}

/* ---- 5. a wait abandoned when the broker stops ---- */

static void test_wait_abandoned_at_shutdown(void **state)
{
	fx *f = *state;
	fx_start(f, (const char *[]){"--budget", "64M", "--waits", "0,250,60000", NULL});
	mb_client *a = fx_connect(f);
	mb_client *b = fx_connect(f);
	static waiter w;

	uint8_t *ra = reserve(a, BUDGET_64M);
	assert_hr(commit(a, ra, BUDGET_64M, eProcessCritical), S_OK);
	uint8_t *rb = reserve(b, MiB);

	start_waiter(f, &w, b, rb, MiB, eProcessCritical);
	wait_for_waiters(a, 1);
	assert_false(atomic_load(&w.done));

	f->running = false;
	fx_keep_log(f);
	int ws = mb_test_broker_stop(&f->broker);
	fx_join(f, w.thread);
	assert_hr(w.hr, HOST_E_ABANDONED);
	assert_true(WIFEXITED(ws));
	assert_int_equal(WEXITSTATUS(ws), 0);

	/* Calls after the stop are checked in test_memory_survives_broker_stop (each one
	 * currently waits for the library's 30 s call timeout). */
}

/* Not arbitration proper, but found next to it: a broker that stops (SIGTERM) must leave the
 * clients' mapped memory intact (BRIEF, lifecycle). */
static void test_memory_survives_broker_stop(void **state)
{
	fx *f = *state;
	fx_start(f, (const char *[]){"--budget", "64M", NULL});
	mb_client *a = fx_connect(f);

	uint8_t *ra = reserve(a, 4 * MiB);
	assert_hr(commit(a, ra, 4 * MiB, eTaskCritical), S_OK);
	memset(ra, 0x5C, 4 * MiB);
	f->running = false;
	fx_keep_log(f);
	int ws = mb_test_broker_stop(&f->broker);
	assert_true(WIFEXITED(ws));
	assert_int_equal(WEXITSTATUS(ws), 0);
	for (uint64_t i = 0; i < 4 * MiB; i += PAGE / 2)
		if (ra[i] != 0x5C)
			fail_msg("byte 0x%" PRIx64
				 " of committed memory reads 0x%02x after the broker "
				 "stopped, expected 0x5c",
				 i, ra[i]);
	assert_hr(commit(a, ra, PAGE, eTaskCritical), HOST_E_CLRNOTAVAILABLE);
}

/* ---- 6. memory-pressure notifications ---- */

static void on_note(EMemoryAvailable level, void *context)
{
	notes *n = context;
	pthread_mutex_lock(&n->lock);
	if (n->count < (int)(sizeof(n->levels) / sizeof(n->levels[0])))
		n->levels[n->count] = level;
	n->count++;
	pthread_mutex_unlock(&n->lock);
}

typedef struct note_cond {
	notes *notes;
	int count;
} note_cond;

static bool notes_reached(void *arg)
{
	note_cond *nc = arg;
	pthread_mutex_lock(&nc->notes->lock);
	bool ok = nc->notes->count >= nc->count;
	pthread_mutex_unlock(&nc->notes->lock);
	return ok;
}

/* Waits for the n-th notification (1-based) and checks its level. */
static void expect_note(notes *n, int index, EMemoryAvailable level)
{
	note_cond nc = {.notes = n, .count = index};
	char what[64];
	snprintf(what, sizeof(what), "notification #%d", index);
	assert_waited(notes_reached, &nc, 10000, what);
	pthread_mutex_lock(&n->lock);
	EMemoryAvailable got = n->levels[index - 1];
	pthread_mutex_unlock(&n->lock);
	if (got != level)
		fail_msg("notification #%d is %d, expected %d", index, (int)got, (int)level);
}

static void expect_pressure(mb_client *c, uint32_t level)
{
	arb_status st = status(c);
	if (st.pressure != level)
		fail_msg("pressure is %u at %" PRIu64 " of %" PRIu64 " bytes, expected %u",
			 st.pressure, st.total_committed, st.budget, level);
}

static void test_pressure_notifications(void **state)
{
	fx *f = *state;
	/* 100 MiB: every MiB is 1% exactly. */
	fx_start(f, (const char *[]){"--budget", "100M", NULL});
	mb_client *n = fx_connect(f);
	mb_client *a = fx_connect(f);
	notes *log = &f->notes;

	assert_hr(mb_register_memory_notification(n, on_note, log), S_OK);
	/* The first notification tells the current level: an empty broker has plenty. */
	expect_note(log, 1, eMemoryAvailableHigh);
	expect_pressure(a, eMemoryAvailableHigh);

	uint8_t *ra = reserve(a, 100 * MiB);
	/* 92% in one commit (above the eTaskCritical ceiling, so at eProcessCritical). */
	assert_hr(commit(a, ra, 92 * MiB, eProcessCritical), S_OK);
	expect_note(log, 2, eMemoryAvailableLow);
	expect_pressure(a, eMemoryAvailableLow);

	/* 85%: Low holds until under 80%. */
	assert_hr(decommit(a, ra + 85 * MiB, 7 * MiB), S_OK);
	expect_pressure(a, eMemoryAvailableLow);
	/* 70%: Neutral. */
	assert_hr(decommit(a, ra + 70 * MiB, 15 * MiB), S_OK);
	expect_note(log, 3, eMemoryAvailableNeutral);
	expect_pressure(a, eMemoryAvailableNeutral);
	/* 55%: still Neutral (High needs under 50%). */
	assert_hr(decommit(a, ra + 55 * MiB, 15 * MiB), S_OK);
	expect_pressure(a, eMemoryAvailableNeutral);
	/* 45%: High. */
	assert_hr(decommit(a, ra + 45 * MiB, 10 * MiB), S_OK);
	expect_note(log, 4, eMemoryAvailableHigh);
	expect_pressure(a, eMemoryAvailableHigh);
	/* 55%: High holds until 60%. */
	assert_hr(commit(a, ra + 45 * MiB, 10 * MiB, eTaskCritical), S_OK);
	expect_pressure(a, eMemoryAvailableHigh);
	/* 65%: Neutral. */
	assert_hr(commit(a, ra + 55 * MiB, 10 * MiB, eTaskCritical), S_OK);
	expect_note(log, 5, eMemoryAvailableNeutral);
	expect_pressure(a, eMemoryAvailableNeutral);

	/* Exactly one notification per change, none for the steps that kept the level. */
	pthread_mutex_lock(&log->lock);
	int count = log->count;
	pthread_mutex_unlock(&log->lock);
	assert_int_equal(count, 5);
	assert_u64(status(a).total_committed, 65 * MiB);
}

/* Anything waiting means Low, whatever the total. */
static void test_waiter_makes_pressure_low(void **state)
{
	fx *f = *state;
	fx_start(f, (const char *[]){"--budget", "64M", "--waits", "0,250,20000", NULL});
	mb_client *a = fx_connect(f);
	mb_client *b = fx_connect(f);
	static waiter w;

	uint8_t *ra = reserve(a, BUDGET_64M);
	assert_hr(commit(a, ra, 40 * MiB, eTaskCritical), S_OK); /* 62.5% */
	expect_pressure(a, eMemoryAvailableNeutral);

	uint8_t *rb = reserve(b, 30 * MiB);
	start_waiter(f, &w, b, rb, 30 * MiB, eProcessCritical);
	wait_for_waiters(a, 1);
	expect_pressure(a, eMemoryAvailableLow);
	assert_u64(status(a).total_committed, 40 * MiB);

	/* 20 MiB back: the waiter is granted, 50 MiB (78%) with nobody waiting is Neutral. */
	assert_hr(decommit(a, ra + 20 * MiB, 20 * MiB), S_OK);
	fx_join(f, w.thread);
	assert_hr(w.hr, S_OK);
	arb_status st = status(a);
	assert_u64(st.total_committed, 50 * MiB);
	assert_u64(st.waiters, 0);
	assert_u64(st.pressure, eMemoryAvailableNeutral);
}

/* ---- 7. GetMemoryLoad ---- */

/*
 * memory_load = ceil(100 * total / budget). available_bytes = what this client could commit now at
 * eTaskCritical: the 90% ceiling less the total, in whole pages (a commit is made of pages; the
 * totals here are page multiples). It is then checked by committing exactly that much, and a page
 * more, through `probe` (a reservation of the caller with room for it), and giving it back.
 */
static void expect_load(mb_client *c, uint64_t budget, uint64_t total, uint8_t *probe)
{
	DWORD load = 12345;
	SIZE_T avail = 12345;
	uint64_t want_load = (total * 100 + budget - 1) / budget;
	uint64_t task = pages_below(ceiling_of(budget, 900));
	uint64_t want_avail = task > total ? task - total : 0;

	assert_u64(status(c).total_committed, total);
	assert_hr(mb_get_memory_load(c, &load, &avail), S_OK);
	if (load != want_load || avail != want_avail)
		fail_msg("at %" PRIu64 " of %" PRIu64
			 " bytes: memory_load %u, available_bytes %zu; "
			 "expected %" PRIu64 " and %" PRIu64 " (90%% of the budget: %" PRIu64 ")",
			 total, budget, (unsigned)load, (size_t)avail, want_load, want_avail,
			 ceiling_of(budget, 900));
	if (avail > 0) {
		assert_hr(commit(c, probe, avail, eTaskCritical), S_OK);
		assert_hr(commit(c, probe + avail, PAGE, eTaskCritical), E_OUTOFMEMORY);
		assert_hr(decommit(c, probe, avail), S_OK);
	} else {
		assert_hr(commit(c, probe, PAGE, eTaskCritical), E_OUTOFMEMORY);
	}
	assert_u64(status(c).total_committed, total);
}

static void test_memory_load(void **state)
{
	fx *f = *state;
	fx_start(f, (const char *[]){"--budget", "64M", NULL});
	mb_client *a = fx_connect(f);
	mb_client *b = fx_connect(f);
	const uint64_t task_limit = pages_below(ceiling_of(BUDGET_64M, 900));
	uint8_t *pa = reserve(a, BUDGET_64M); /* probes */
	uint8_t *pb = reserve(b, BUDGET_64M);

	expect_load(a, BUDGET_64M, 0, pa);
	uint8_t *ra = reserve(a, BUDGET_64M);
	uint8_t *rb = reserve(b, BUDGET_64M);

	assert_hr(commit(a, ra, PAGE, eTaskCritical), S_OK);
	expect_load(b, BUDGET_64M, PAGE, pb); /* rounds up to 1% */
	assert_hr(commit(b, rb, 32 * MiB - PAGE, eTaskCritical), S_OK);
	expect_load(a, BUDGET_64M, 32 * MiB, pa); /* 50% exactly */
	assert_hr(commit(a, ra + PAGE, PAGE, eAppDomainCritical), S_OK);
	expect_load(b, BUDGET_64M, 32 * MiB + PAGE, pb); /* 51% */
	assert_hr(commit(a, ra + 2 * PAGE, task_limit - 32 * MiB - PAGE, eTaskCritical), S_OK);
	expect_load(a, BUDGET_64M, task_limit, pa); /* at the task ceiling */
	assert_hr(commit(b, rb + 32 * MiB, 2 * MiB, eAppDomainCritical), S_OK);
	expect_load(b, BUDGET_64M, task_limit + 2 * MiB, pb); /* above it: nothing available */
	uint64_t rest = BUDGET_64M - task_limit - 2 * MiB;
	assert_hr(commit(b, rb + 34 * MiB, rest, eProcessCritical), S_OK);
	expect_load(a, BUDGET_64M, BUDGET_64M, pa); /* 100% */
	assert_hr(decommit(b, rb, 32 * MiB - PAGE), S_OK);
	expect_load(a, BUDGET_64M, BUDGET_64M - 32 * MiB + PAGE, pa);
}

/* ---- 8. reclaim of MEM_RESET pages ---- */

static void test_reset_pages_reclaimed(void **state)
{
	fx *f = *state;
	fx_start(f, (const char *[]){"--budget", "64M", NULL});
	mb_client *a = fx_connect(f);
	mb_client *b = fx_connect(f);
	const uint64_t size = 40 * MiB;
	void *mem = NULL;

	uint8_t *ra = reserve(a, size);
	assert_hr(commit(a, ra, size, eTaskCritical), S_OK);
	memset(ra, 0xAB, size);
	assert_hr(mb_virtual_alloc(a, ra, size, MEM_RESET, PAGE_READWRITE, eTaskCritical, &mem),
		  S_OK);
	arb_status st = status(a);
	assert_u64(st.total_committed, size); /* MEM_RESET pages stay charged until reclaimed */
	assert_u64(st.reclaimed, 0);

	/* 80 MiB would not fit: A's reset pages are discarded to make room. */
	uint8_t *rb = reserve(b, size);
	assert_hr(commit(b, rb, size, eTaskCritical), S_OK);
	st = status(b);
	assert_true(st.reclaimed > 0);
	assert_u64(st.reclaimed, size);
	assert_u64_le(st.total_committed, BUDGET_64M);
	assert_u64(st.total_committed, size);
	assert_u64(st.committed, size);
	assert_u64(status(a).committed, 0);
	memset(rb, 0xCD, size);

	/* A wants its data back: the pages were discarded. A small range first (its pages can be
	 * charged again): they come back as zero pages. */
	assert_hr(
	    mb_virtual_alloc(a, ra, 16 * PAGE, MEM_RESET_UNDO, PAGE_READWRITE, eTaskCritical, &mem),
	    MB_E_INVALID_ADDRESS);
	for (uint64_t off = 0; off < 16 * PAGE; off += PAGE / 4)
		if (ra[off] != 0)
			fail_msg("byte 0x%" PRIx64
				 " of the discarded range reads 0x%02x, expected 0",
				 off, ra[off]);
	assert_u64_le(status(a).total_committed, BUDGET_64M);

	/* Then the whole range (the budget cannot charge all of it again). */
	assert_hr(
	    mb_virtual_alloc(a, ra, size, MEM_RESET_UNDO, PAGE_READWRITE, eTaskCritical, &mem),
	    MB_E_INVALID_ADDRESS);
	const uint64_t probes[] = {16 * PAGE, 16 * PAGE + 17, size / 2, size - PAGE, size - 1};
	for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++)
		if (ra[probes[i]] != 0)
			fail_msg("byte 0x%" PRIx64
				 " of the discarded range reads 0x%02x, expected 0",
				 probes[i], ra[probes[i]]);
	/* B's memory is untouched by all this. */
	assert_int_equal(rb[0], 0xCD);
	assert_int_equal(rb[size - 1], 0xCD);
	st = status(b);
	assert_u64_le(st.total_committed, BUDGET_64M);
}

/* ---- 9. honest charging: writes to pages that were never committed ---- */

/* Descriptors of this process whose target is this process's memfd sections. */
static int section_fds(int *out, int max)
{
	char prefix[64], path[PATH_MAX], target[PATH_MAX];
	struct dirent *de;
	int n = 0;
	DIR *d = opendir("/proc/self/fd");

	assert_non_null(d);
	snprintf(prefix, sizeof(prefix), "/memfd:membroker-pid%d ", (int)getpid());
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/fd/%s", de->d_name);
		ssize_t len = readlink(path, target, sizeof(target) - 1);
		if (len <= 0)
			continue;
		target[len] = '\0';
		if (strncmp(target, prefix, strlen(prefix)) == 0 && n < max)
			out[n++] = atoi(de->d_name);
	}
	closedir(d);
	return n;
}

typedef struct audit_cond {
	mb_client *client;
	uint32_t offences;
} audit_cond;

static bool audited(void *arg)
{
	audit_cond *ac = arg;
	arb_status st;
	return status_try(ac->client, &st) == S_OK && st.offences == ac->offences &&
	       st.section_allocated <= st.committed;
}

static HRESULT g_first_failure;

static bool status_fails(void *arg)
{
	mb_session_status st;
	HRESULT hr = mb_get_session_status(arg, &st);
	if (hr != S_OK)
		g_first_failure = hr;
	return hr != S_OK;
}

typedef struct total_cond {
	mb_client *client;
	uint64_t total;
} total_cond;

static bool total_is(void *arg)
{
	total_cond *tc = arg;
	arb_status st;
	return status_try(tc->client, &st) == S_OK && st.total_committed == tc->total;
}

static bool log_contains(const char *file, const char *needle)
{
	static char buf[1 << 20];
	FILE *fp = fopen(file, "r");
	size_t n;
	if (fp == NULL)
		return false;
	n = fread(buf, 1, sizeof(buf) - 1, fp);
	fclose(fp);
	buf[n] = '\0';
	return strstr(buf, needle) != NULL;
}

static void test_uncommitted_writes_audited(void **state)
{
	fx *f = *state;
	fx_start(f, (const char *[]){"--budget", "64M", "--audit-interval", "50", NULL});
	mb_client *o = fx_connect(f); /* observer */
	int before[64], after[64], nb, na, fd = -1;

	nb = section_fds(before, 64);
	mb_client *x = fx_connect(f);
	na = section_fds(after, 64);
	assert_int_equal(na, nb + 1);
	for (int i = 0; i < na; i++) {
		bool old = false;
		for (int j = 0; j < nb; j++)
			old = old || before[j] == after[i];
		if (!old)
			fd = after[i];
	}
	assert_true(fd >= 0);

	/* X commits 64 KiB honestly and reserves 4 MiB it never commits. */
	uint8_t *honest = reserve(x, 64 * 1024);
	assert_hr(commit(x, honest, 64 * 1024, eTaskCritical), S_OK);
	memset(honest, 0x77, 64 * 1024);
	uint8_t *res = reserve(x, 4 * MiB);
	assert_u64(state_at(x, res), MEM_RESERVE);

	/* Offset == address: this maps the section pages behind the uncommitted reservation. */
	uint8_t *rogue =
	    mmap(NULL, MiB, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)(uintptr_t)res);
	assert_true(rogue != MAP_FAILED);

	/* One page per offence: the audit sees a page allocated or not, so one write is one
	 * offence. (A 1 MiB memset preempted under load was seen half done by one audit and the
	 * rest by the next, two offences for one write, and this loop waited for ever.) */
	for (uint32_t offence = 1; offence <= 2; offence++) {
		memset(rogue, 0x5A, PAGE);
		audit_cond ac = {.client = x, .offences = offence};
		assert_waited(audited, &ac, LONG_WAIT_MS, "the audit to count the offence");
		/* The rogue pages are gone, the honest ones kept. */
		assert_int_equal(rogue[0], 0);
		assert_int_equal(rogue[PAGE - 1], 0);
		assert_int_equal(honest[0], 0x77);
		assert_int_equal(honest[64 * 1024 - 1], 0x77);
		arb_status st = status(x);
		assert_u64(st.committed, 64 * 1024);
		assert_u64(st.total_committed, 64 * 1024);
		assert_u64(status(o).offences, 0);
	}

	/* Third offence: X is disconnected. */
	memset(rogue, 0x5A, MiB);
	g_first_failure = S_OK;
	assert_waited(status_fails, x, LONG_WAIT_MS, "the offender to be disconnected");
	munmap(rogue, MiB);
	HRESULT first = g_first_failure;
	assert_hr(commit(x, res, PAGE, eTaskCritical), HOST_E_CLRNOTAVAILABLE);
	mb_session_status pub;
	assert_hr(mb_get_session_status(x, &pub), HOST_E_CLRNOTAVAILABLE);

	/* Its commits went back to the budget; the observer was never blamed. */
	total_cond tc = {.client = o, .total = 0};
	assert_waited(total_is, &tc, LONG_WAIT_MS, "the offender's memory back in the budget");
	assert_u64(status(o).offences, 0);
	assert_true(log_contains(f->broker.log, "after repeated offences"));
	/* A lost connection is HOST_E_CLRNOTAVAILABLE from the first call on (membroker.h). */
	assert_hr(first, HOST_E_CLRNOTAVAILABLE);
}

/* ---- 10. the ledger under concurrent load ---- */

#define LOAD_CLIENTS 8
#define LOAD_OPS     300
#define LOAD_PAGES   4096 /* 16 MiB per client: 128 MiB reserved against 64 MiB */

typedef struct load_worker {
	mb_client *client;
	uint8_t *base;
	unsigned seed;
	bool committed[LOAD_PAGES];
	int errors;
	char error[400];
	int granted, refused, timed_out;
} load_worker;

static atomic_bool g_load_stop;

static void *load_main(void *arg)
{
	load_worker *w = arg;
	unsigned seed = w->seed;

	for (int op = 0; op < LOAD_OPS; op++) {
		size_t first = (size_t)rand_r(&seed) % LOAD_PAGES;
		size_t max = LOAD_PAGES - first < 256 ? LOAD_PAGES - first : 256;
		size_t count = 1 + (size_t)rand_r(&seed) % max;
		uint8_t *addr = w->base + first * PAGE;
		uint64_t len = count * PAGE;
		HRESULT hr;

		if (rand_r(&seed) % 10 < 6) {
			EMemoryCriticalLevel level = (EMemoryCriticalLevel)(rand_r(&seed) % 3);
			hr = commit(w->client, addr, len, level);
			if (hr == S_OK) {
				for (size_t i = first; i < first + count; i++)
					w->committed[i] = true;
				addr[0] = (uint8_t)op; /* really use it */
				addr[len - 1] = (uint8_t)op;
				w->granted++;
			} else if (hr == E_OUTOFMEMORY) {
				w->refused++;
			} else if (hr == HOST_E_TIMEOUT) {
				w->timed_out++;
			} else if (w->errors++ == 0) {
				snprintf(w->error, sizeof(w->error),
					 "op %d: commit of %zu pages at %d: %s (%s)", op, count,
					 (int)level, mb_hresult_name(hr), mb_last_error());
			}
		} else {
			hr = decommit(w->client, addr, len);
			if (hr == S_OK) {
				for (size_t i = first; i < first + count; i++)
					w->committed[i] = false;
			} else if (w->errors++ == 0) {
				snprintf(w->error, sizeof(w->error),
					 "op %d: decommit of %zu pages: %s (%s)", op, count,
					 mb_hresult_name(hr), mb_last_error());
			}
		}
	}
	return NULL;
}

typedef struct sampler {
	mb_client *client;
	uint64_t budget;
	uint64_t samples;
	uint64_t max_total;
	uint32_t max_waiters;
	int errors;
	HRESULT error;
} sampler;

static void *sampler_main(void *arg)
{
	sampler *s = arg;
	while (!atomic_load(&g_load_stop)) {
		arb_status st;
		HRESULT hr = status_try(s->client, &st);
		if (hr != S_OK) {
			s->errors++;
			s->error = hr;
			break;
		}
		s->samples++;
		if (st.total_committed > s->max_total)
			s->max_total = st.total_committed;
		if (st.waiters > s->max_waiters)
			s->max_waiters = st.waiters;
	}
	return NULL;
}

static void test_ledger_exact_under_load(void **state)
{
	fx *f = *state;
	fx_start(f, (const char *[]){"--budget", "64M", "--waits", "0,5,20", "--audit-interval",
				     "50", NULL});
	static load_worker workers[LOAD_CLIENTS];
	static sampler smp;
	int threads[LOAD_CLIENTS], sampler_thread;

	memset(workers, 0, sizeof(workers));
	memset(&smp, 0, sizeof(smp));
	for (int i = 0; i < LOAD_CLIENTS; i++) {
		workers[i].client = fx_connect(f);
		workers[i].base = reserve(workers[i].client, LOAD_PAGES * PAGE);
		workers[i].seed = 20240601u + (unsigned)i;
	}
	smp.client = fx_connect(f);
	smp.budget = BUDGET_64M;
	atomic_store(&g_load_stop, false);

	sampler_thread = fx_spawn(f, sampler_main, &smp);
	for (int i = 0; i < LOAD_CLIENTS; i++)
		threads[i] = fx_spawn(f, load_main, &workers[i]);
	for (int i = 0; i < LOAD_CLIENTS; i++)
		fx_join(f, threads[i]);
	atomic_store(&g_load_stop, true);
	fx_join(f, sampler_thread);

	int granted = 0, refused = 0, timed_out = 0;
	for (int i = 0; i < LOAD_CLIENTS; i++) {
		if (workers[i].errors > 0)
			fail_msg("client %d (seed %u): %d unexpected results, first: %s", i,
				 workers[i].seed, workers[i].errors, workers[i].error);
		granted += workers[i].granted;
		refused += workers[i].refused;
		timed_out += workers[i].timed_out;
	}
	print_message("load: %d commits granted, %d refused, %d timed out; %" PRIu64
		      " samples, max total %" PRIu64 ", max waiters %u\n",
		      granted, refused, timed_out, smp.samples, smp.max_total, smp.max_waiters);
	if (smp.errors > 0)
		fail_msg("the sampler's status call failed: %s", mb_hresult_name(smp.error));
	assert_true(smp.samples > 0);
	assert_u64_le(smp.max_total, BUDGET_64M);
	assert_true(granted > 0);

	/* Quiet now: the total is the sum of the clients' commits, each as the client counts it. */
	uint64_t sum = 0;
	for (int i = 0; i < LOAD_CLIENTS; i++) {
		uint64_t pages = 0;
		for (size_t p = 0; p < LOAD_PAGES; p++)
			pages += workers[i].committed[p];
		arb_status st = status(workers[i].client);
		if (st.committed != pages * PAGE)
			fail_msg("client %d (seed %u): broker says %" PRIu64
				 " bytes committed, the "
				 "client's successful calls say %" PRIu64,
				 i, workers[i].seed, st.committed, pages * PAGE);
		assert_u64(st.offences, 0);
		sum += st.committed;
	}
	arb_status st = status(smp.client);
	assert_u64(st.committed, 0);
	assert_u64(st.waiters, 0);
	assert_u64(st.total_committed, sum);
	assert_u64_le(st.total_committed, BUDGET_64M);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_level_ceilings, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_appdomain_wait_times_out, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_process_wait_granted_by_decommit, fx_setup,
					    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_no_head_of_line_blocking, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_wait_abandoned_at_shutdown, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_memory_survives_broker_stop, fx_setup,
					    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_pressure_notifications, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_waiter_makes_pressure_low, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_memory_load, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_reset_pages_reclaimed, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_uncommitted_writes_audited, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_ledger_exact_under_load, fx_setup, fx_teardown),
	};
	/* ARB_FILTER=pattern runs only the matching tests (cmocka's filter syntax). */
	if (getenv("ARB_FILTER") != NULL)
		cmocka_set_test_filter(getenv("ARB_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
