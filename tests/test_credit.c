/*
 * test_credit.c: commit credit against the real membrokerd. After a round-trip commit the broker
 * grants a client credit (charged to the budget, placed in the credit word in page 0 of its
 * section); the library then commits and decommits pages by itself while the credit lasts, and
 * reports such commits with a Sync when the credit runs out or before a round trip about them.
 *
 * What is checked here, from the outside (mb_get_session_status, the data, the budget figures):
 *  - most commits need no round trip, and the broker's figures are exact without any explicit
 *    Sync (used credit counts as committed, unused credit does not);
 *  - --commit-credit 0 turns it all off;
 *  - credit is never granted above 80% of the budget, and unused credit is taken back for a
 *    commit that needs it (another process's) and on entering Low pressure;
 *  - the audit never punishes honest local commits, and bounds a client that forges its credit;
 *  - a broker restart with unreported local commits loses neither data nor figures;
 *  - several threads committing locally at once keep the books exact.
 *
 * Every test starts its own broker with the options it needs (fixture: stopped in teardown, also
 * after a failed assertion) and ends by stopping it, which must then exit cleanly: in the
 * sanitizer build that is where the broker reports what it found. No test asserts a duration:
 * every wait is a poll with a generous limit. The hostile-client test reaches into the library's
 * client object (client_internal.h), as a malicious program could through its own mapping of the
 * credit page.
 *
 * A second process is this binary run again with "--holder ADDRESS": nng is not fork-safe and
 * the harness uses it before any test forks, so a client in another process needs an exec.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "membroker.h"
/* The client object itself, for the forged-credit test and the audit canary (section_fd). */
#include "../client/client_internal.h"

#define PAGE  ((uint64_t)4096)
#define CHUNK ((uint64_t)64 * 1024)
#define MiB   ((uint64_t)1024 * 1024)

/* The broker's default --commit-credit, and what a session's credit target grows to at most
 * while it keeps running out (16x). */
#define DEFAULT_CREDIT (4 * MiB)
#define MAX_CREDIT     (16 * DEFAULT_CREDIT)

/* Generous limit for polls: the conditions normally hold within milliseconds. */
#define WAIT_MS 20000

static const char *self_path;

/* ---- assertion helpers ---- */

#define assert_waited(cond, arg, what)                                                             \
	do {                                                                                       \
		if (!mb_test_wait_for((cond), (arg), WAIT_MS)) {                                   \
			print_error("%s:%d: gave up after %d ms waiting for %s\n", __FILE__,       \
				    __LINE__, WAIT_MS, (what));                                    \
			_fail(__FILE__, __LINE__);                                                 \
		}                                                                                  \
	} while (0)

/* A page's pattern is in its first and last words: both ends of every page are checked. */
static uint64_t pattern(uint64_t seed, uint64_t page)
{
	return (seed * 0x9E3779B97F4A7C15ull) ^ (page + 1) * 0xBF58476D1CE4E5B9ull;
}

/* Pages are numbered from p: a pattern written over a range is checked from the same start. */
static void fill(void *p, uint64_t len, uint64_t seed)
{
	for (uint64_t i = 0; i < len / PAGE; i++) {
		uint64_t *w = (uint64_t *)((uint8_t *)p + i * PAGE);
		w[0] = pattern(seed, i);
		w[PAGE / 8 - 1] = ~pattern(seed, i);
	}
}

/* Index of the first page that does not hold the pattern (or zeros if zero), or -1. */
static long bad_page(const void *p, uint64_t len, uint64_t seed, bool zero)
{
	for (uint64_t i = 0; i < len / PAGE; i++) {
		const uint64_t *w = (const uint64_t *)((const uint8_t *)p + i * PAGE);
		uint64_t a = zero ? 0 : pattern(seed, i), b = zero ? 0 : ~pattern(seed, i);
		if (w[0] != a || w[PAGE / 8 - 1] != b)
			return (long)i;
	}
	return -1;
}

/* Whether page pg (numbered from the start of a fill) holds the pattern. */
static bool page_holds(const void *start, uint64_t pg, uint64_t seed)
{
	const uint64_t *w = (const uint64_t *)((const uint8_t *)start + pg * PAGE);
	return w[0] == pattern(seed, pg) && w[PAGE / 8 - 1] == ~pattern(seed, pg);
}

#define assert_pattern(p, len, seed)                                                               \
	do {                                                                                       \
		long bad_ = bad_page((p), (len), (seed), false);                                   \
		if (bad_ >= 0) {                                                                   \
			print_error("%s:%d: page %ld of %s (%p) lost its data\n", __FILE__,        \
				    __LINE__, bad_, #p, (void *)(p));                              \
			_fail(__FILE__, __LINE__);                                                 \
		}                                                                                  \
	} while (0)

#define assert_zero(p, len)                                                                        \
	do {                                                                                       \
		long bad_ = bad_page((p), (len), 0, true);                                         \
		if (bad_ >= 0) {                                                                   \
			print_error("%s:%d: page %ld of %s (%p) does not read as zero\n",          \
				    __FILE__, __LINE__, bad_, #p, (void *)(p));                    \
			_fail(__FILE__, __LINE__);                                                 \
		}                                                                                  \
	} while (0)

/* ---- the library, briefly ---- */

static HRESULT status_try(mb_client *c, mb_session_status *st)
{
	memset(st, 0, sizeof(*st));
	return mb_get_session_status(c, st);
}

static mb_session_status status(mb_client *c)
{
	mb_session_status st;
	assert_hr(status_try(c, &st), S_OK);
	return st;
}

static uint8_t *reserve(mb_client *c, uint64_t size)
{
	void *p = NULL;
	assert_hr(mb_virtual_alloc(c, NULL, size, MEM_RESERVE, PAGE_NOACCESS, eTaskCritical, &p),
		  S_OK);
	assert_non_null(p);
	return p;
}

static HRESULT commit_at(mb_client *c, void *p, uint64_t size, EMemoryCriticalLevel level)
{
	void *out = NULL;
	HRESULT hr = mb_virtual_alloc(c, p, size, MEM_COMMIT, PAGE_READWRITE, level, &out);
	if (hr == S_OK && out != p)
		return E_UNEXPECTED; /* page-aligned commits answer with their own address */
	return hr;
}

static HRESULT decommit(mb_client *c, void *p, uint64_t size)
{
	return mb_virtual_free(c, p, size, MEM_DECOMMIT);
}

static HRESULT release(mb_client *c, void *base)
{
	return mb_virtual_free(c, base, 0, MEM_RELEASE);
}

/* A level's ceiling or the credit limit: permille of the budget, rounded down (as the ledger). */
static uint64_t share_of(uint64_t budget, unsigned permille)
{
	return budget / 1000 * permille + budget % 1000 * permille / 1000;
}

/* ---- fixture: one broker, its clients, at most one child process ---- */

#define MAX_CLIENTS 8

typedef struct fx {
	mb_test_broker broker;
	bool running;
	mb_client *clients[MAX_CLIENTS];
	int nclients;
	int broker_status; /* wait status, once it exited */
	pid_t child;
	int cmd_fd, reply_fd;
} fx;

static int fx_setup(void **state)
{
	fx *f = calloc(1, sizeof(*f));
	if (f == NULL)
		return -1;
	f->child = -1;
	f->cmd_fd = f->reply_fd = -1;
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	fx *f = *state;
	for (int i = f->nclients - 1; i >= 0; i--)
		mb_disconnect(f->clients[i]);
	if (f->cmd_fd >= 0)
		close(f->cmd_fd);
	if (f->reply_fd >= 0)
		close(f->reply_fd);
	if (f->child > 0) {
		kill(f->child, SIGKILL);
		waitpid(f->child, NULL, 0);
	}
	if (f->running || f->broker.dir[0] != '\0')
		mb_test_broker_stop(&f->broker);
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
	f->clients[f->nclients++] = c;
	return c;
}

static bool broker_exited(void *arg)
{
	fx *f = arg;
	int status;
	pid_t r = waitpid(f->broker.pid, &status, WNOHANG);
	if (r == f->broker.pid || (r < 0 && errno != EINTR)) {
		f->broker.pid = -1;
		f->broker_status = r == -1 ? -1 : status;
		return true;
	}
	return false;
}

/*
 * The end of every test: clients gone, then the broker stopped, which must exit cleanly. In the
 * sanitizer build that is where the broker reports what it found (abort_on_error, leaks), so its
 * log is shown when it did not.
 */
static void fx_finish(fx *f)
{
	for (int i = f->nclients - 1; i >= 0; i--)
		mb_disconnect(f->clients[i]);
	f->nclients = 0;
	assert_true(f->running && f->broker.pid > 0);
	kill(f->broker.pid, SIGTERM);
	bool exited = mb_test_wait_for(broker_exited, f, WAIT_MS);
	int status = f->broker_status;
	bool clean = exited && WIFEXITED(status) && WEXITSTATUS(status) == 0;
	if (!clean) {
		char cmd[300];
		snprintf(cmd, sizeof(cmd), "cat '%s' >&2", f->broker.log);
		if (system(cmd) != 0)
			print_error("cannot show %s\n", f->broker.log);
	}
	mb_test_broker_stop(&f->broker); /* kills it if it hung; removes the directory */
	f->running = false;
	if (!clean)
		fail_msg("membrokerd did not exit cleanly on SIGTERM (%s, wait status 0x%x)",
			 exited ? "exited" : "hung", status);
}

/* Disconnects one client early (the fixture forgets it). */
static void fx_disconnect(fx *f, mb_client *c)
{
	for (int i = 0; i < f->nclients; i++)
		if (f->clients[i] == c) {
			f->clients[i] = f->clients[--f->nclients];
			break;
		}
	mb_disconnect(c);
}

/* ---- the audit canary ---- */

/*
 * There is no way to ask whether an audit has run, but there is a way to see one: a second client
 * (its own session) writes pages of its section it never committed, through a mapping of its own
 * section, and the audit counts that as an offence and punches them out. Seeing an offence
 * counted after the honest client's writes proves an audit looked at them too (every audit looks
 * at every session). Two offences at most: the third disconnects the offender and bans this
 * process. Four pages only, so one write is hardly ever split across two audits.
 */
typedef struct canary {
	mb_client *x;
	uint8_t *rogue;
	uint64_t len;
	uint32_t offences;	 /* counted so far */
	void (*tick)(void *arg); /* runs at every poll: the honest client's work */
	void *tick_arg;
} canary;

static void canary_init(fx *f, canary *cn)
{
	memset(cn, 0, sizeof(*cn));
	cn->x = fx_connect(f);
	cn->len = 4 * PAGE;
	uint8_t *res = reserve(cn->x, MiB);
	/* Offset == address: the section pages behind the uncommitted reservation. */
	cn->rogue = mmap(NULL, cn->len, PROT_READ | PROT_WRITE, MAP_SHARED, cn->x->section_fd,
			 (off_t)(uintptr_t)res);
	assert_true(cn->rogue != MAP_FAILED);
}

static bool canary_punished(void *arg)
{
	canary *cn = arg;
	mb_session_status st;
	if (cn->tick != NULL)
		cn->tick(cn->tick_arg);
	/* The canary never commits, so it never holds credit and owns no page the audit keeps:
	 * once its pages are all gone, the audit that found them is over. */
	if (status_try(cn->x, &st) != S_OK || st.offences <= cn->offences ||
	    st.section_allocated != 0)
		return false;
	cn->offences = st.offences;
	return true;
}

/* Writes the rogue pages until audits have counted two offences. */
static void canary_two_audits(canary *cn)
{
	while (cn->offences < 2) {
		memset(cn->rogue, 0x5A, cn->len);
		assert_waited(canary_punished, cn, "an audit to punish the canary");
		assert_int_equal(cn->rogue[0], 0);
	}
}

static void canary_fini(canary *cn)
{
	if (cn->rogue != NULL && cn->rogue != MAP_FAILED)
		munmap(cn->rogue, cn->len);
	cn->rogue = NULL;
}

/* ---- 1. most commits skip the round trip, and the figures stay exact ---- */

static void test_local_commits_skip_round_trip(void **state)
{
	fx *f = *state;
	fx_start(f, (const char *[]){"--budget", "256M", NULL});
	mb_client *c = fx_connect(f);
	const uint64_t budget = 256 * MiB;
	const uint64_t chunks = 16 * MiB / CHUNK;
	uint64_t commits = 0;
	mb_session_status st;

	uint8_t *base = reserve(c, 16 * MiB);
	/* The first commit of a session is a round trip: nothing was granted before it. */
	assert_hr(commit_at(c, base, CHUNK, eTaskCritical), S_OK);
	commits++;
	fill(base, CHUNK, 1);
	st = status(c);
	assert_u64(st.local_commits, 0);
	assert_u64(st.committed, CHUNK);
	assert_u64(st.total_committed, CHUNK);
	/* The grant that came with it: the default, since the budget is nearly empty. */
	assert_u64(st.credit, DEFAULT_CREDIT);
	assert_u64(st.total_credit, DEFAULT_CREDIT);

	/* Unused credit is held, not used: GetMemoryLoad leaves it out of both figures. */
	DWORD load = 100;
	SIZE_T avail = 0;
	assert_hr(mb_get_memory_load(c, &load, &avail), S_OK);
	/* The load is rounded up: 64 KiB of 256 MiB is 1%; with the credit it would be 2%. */
	assert_int_equal(load, 1);
	assert_u64_le(avail, share_of(budget, 900) - CHUNK);
	assert_u64_ge(avail, share_of(budget, 900) - CHUNK - PAGE);

	/* Commit, write, decommit at varying offsets (chunk 0 stays committed throughout). Every
	 * offset comes round many times: what a cycle wrote must read as zero at the next. */
	for (uint64_t i = 0; i < 500; i++) {
		uint8_t *p = base + CHUNK * (1 + (i * 7919) % (chunks - 1));
		assert_hr(commit_at(c, p, CHUNK, eTaskCritical), S_OK);
		commits++;
		assert_zero(p, CHUNK);
		fill(p, CHUNK, 100 + i);
		assert_pattern(p, CHUNK, 100 + i);
		if (i % 97 == 0) {
			/* Exact while the chunk is a local commit nobody reported. */
			st = status(c);
			assert_u64(st.committed, 2 * CHUNK);
			assert_u64(st.total_committed, 2 * CHUNK);
		}
		assert_hr(decommit(c, p, CHUNK), S_OK);
	}
	st = status(c);
	assert_u64(st.committed, CHUNK);
	assert_u64(st.total_committed, CHUNK);
	assert_u64_ge(st.local_commits, 500 * 9 / 10);
	assert_u64_ge(st.local_decommits, 500 * 9 / 10);
	assert_pattern(base, CHUNK, 1);

	/* Climbing through a reservation without decommits, as a heap grows: 12.5 MiB, three
	 * times the credit, so it runs out and Syncs report what was committed on the way. */
	uint8_t *heap = reserve(c, 16 * MiB);
	const uint64_t climb = 200;
	for (uint64_t i = 0; i < climb; i++) {
		assert_hr(commit_at(c, heap + i * CHUNK, CHUNK, eTaskCritical), S_OK);
		commits++;
		assert_zero(heap + i * CHUNK, CHUNK);
		fill(heap + i * CHUNK, CHUNK, 1000 + i);
		if (i % 50 == 49 || i == climb - 1) {
			st = status(c);
			assert_u64(st.committed, CHUNK + (i + 1) * CHUNK);
			assert_u64(st.total_committed, CHUNK + (i + 1) * CHUNK);
			/* The target doubles at each Sync that found the credit short. */
			assert_u64_le(st.credit, MAX_CREDIT);
		}
	}
	st = status(c);
	/* Round trips: every commit not served locally (the first one among them) and every
	 * Sync. Still at most a tenth of the commits. */
	assert_u64_ge(st.syncs, 1);
	assert_u64_le(st.local_commits, commits - 1);
	assert_u64_le(commits - st.local_commits + st.syncs, commits / 10);
	for (uint64_t i = 0; i < climb; i++)
		assert_pattern(heap + i * CHUNK, CHUNK, 1000 + i);

	/* Releasing another reservation leaves these pages, reported or not, alone. */
	uint64_t syncs = st.syncs;
	assert_hr(release(c, base), S_OK);
	st = status(c);
	assert_u64(st.committed, climb * CHUNK);
	assert_u64(st.total_committed, climb * CHUNK);
	for (uint64_t i = 0; i < climb; i++)
		assert_pattern(heap + i * CHUNK, CHUNK, 1000 + i);

	/* A commit over pages the broker has not heard of yet must report them first (a Sync),
	 * and the data in them survives it. Committed pages are not charged twice. */
	assert_hr(commit_at(c, heap, climb * CHUNK, eTaskCritical), S_OK);
	st = status(c);
	assert_u64_ge(st.syncs, syncs + 1);
	assert_u64(st.committed, climb * CHUNK);
	assert_u64(st.total_committed, climb * CHUNK);
	for (uint64_t i = 0; i < climb; i++)
		assert_pattern(heap + i * CHUNK, CHUNK, 1000 + i);

	assert_hr(release(c, heap), S_OK);
	st = status(c);
	assert_u64(st.committed, 0);
	assert_u64(st.total_committed, 0);
	assert_u64(st.section_allocated, 0);
	assert_u64(st.reservations, 0);
	fx_finish(f);
}

/* ---- 1b. the library counts what crossed to the broker (mb_get_client_stats) ---- */

static mb_client_stats stats_of(mb_client *c)
{
	mb_client_stats s;
	memset(&s, 0xff, sizeof(s));
	assert_hr(mb_get_client_stats(c, &s), S_OK);
	return s;
}

static void test_client_stats_count_round_trips(void **state)
{
	fx *f = *state;
	fx_start(f, (const char *[]){"--budget", "256M", NULL});
	mb_client *c = fx_connect(f);

	mb_client_stats s0 = stats_of(c), s;
	assert_u64(s0.alloc_calls, 0);
	assert_u64(s0.alloc_remote, 0);
	assert_u64(s0.free_calls, 0);
	assert_u64(s0.free_remote, 0);
	assert_u64_ge(s0.round_trips, 1); /* Hello */

	uint8_t *base = reserve(c, 16 * MiB); /* a round trip */
	s = stats_of(c);
	assert_u64(s.alloc_calls, 1);
	assert_u64(s.alloc_remote, 1);
	assert_u64(s.round_trips, s0.round_trips + 1);
	assert_hr(commit_at(c, base, CHUNK, eTaskCritical), S_OK); /* the first: a round trip */
	assert_hr(commit_at(c, base + CHUNK, CHUNK, eTaskCritical), S_OK); /* from credit */
	s = stats_of(c);
	assert_u64(s.alloc_calls, 3);
	assert_u64(s.alloc_remote, 2);
	assert_u64(s.local_commits, 1);
	assert_u64(s.round_trips, s0.round_trips + 2);
	assert_hr(decommit(c, base + CHUNK, CHUNK), S_OK); /* a local commit: done locally */
	MEMORY_BASIC_INFORMATION mbi;
	SIZE_T written = 0;
	assert_hr(mb_virtual_query(c, base, &mbi, sizeof(mbi), &written), S_OK);
	void *mem = NULL;
	assert_hr(mb_virtual_alloc(c, base, 0, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &mem),
		  E_INVALIDARG); /* refused inside the process: a call, not a round trip */
	s = stats_of(c);
	assert_u64(s.alloc_calls, 4);
	assert_u64(s.alloc_remote, 2);
	assert_u64(s.free_calls, 1);
	assert_u64(s.free_remote, 0);
	assert_u64(s.local_decommits, 1);
	assert_u64(s.round_trips, s0.round_trips + 2);

	/* A reservation the broker knows: released locally too, reported at the next Sync. */
	assert_hr(release(c, base), S_OK);
	s = stats_of(c);
	assert_u64(s.free_calls, 2);
	assert_u64(s.free_remote, 0);
	assert_u64(s.local_releases, 1);
	assert_u64(s.round_trips, s0.round_trips + 2);
	assert_u64(s.syncs, 0);
	assert_u64(s.reconnects, 0);
	/* Requests that are not VirtualAlloc/VirtualFree count as round trips only; the status
	 * reports the release first (a Sync), so its figures count it. */
	mb_session_status st = status(c);
	assert_u64(st.reservations, 0);
	assert_u64(st.committed, 0);
	mb_client_stats s2 = stats_of(c);
	assert_u64(s2.syncs, 1);
	assert_u64(s2.round_trips, s.round_trips + 2);
	assert_u64(s2.alloc_remote + s2.free_remote, s.alloc_remote + s.free_remote);

	assert_hr(mb_get_client_stats(c, NULL), E_POINTER);
	assert_hr(mb_get_client_stats(NULL, &s), E_INVALIDARG);
	fx_finish(f);
}

/* ---- 1c. reservations and releases without a round trip ---- */

static void test_reserve_and_release_skip_round_trip(void **state)
{
	fx *f = *state;
	fx_start(f, (const char *[]){"--budget", "256M", NULL});
	mb_client *c = fx_connect(f);
	const uint64_t block = 256 * 1024;
	mb_session_status st;

	/* The first reservation and commit are round trips: they bring both credits. */
	uint8_t *first = NULL;
	assert_hr(mb_virtual_alloc(c, NULL, block, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
				   eTaskCritical, (void **)&first),
		  S_OK);
	fill(first, block, 7);
	mb_client_stats s0 = stats_of(c);

	/* A runtime's large blocks: reserve and commit, use, release. No round trip at all. */
	for (uint64_t i = 0; i < 300; i++) {
		uint8_t *p = NULL;
		assert_hr(mb_virtual_alloc(c, NULL, block, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
					   eTaskCritical, (void **)&p),
			  S_OK);
		assert_zero(p, block);
		fill(p, block, 1000 + i);
		MEMORY_BASIC_INFORMATION mbi;
		SIZE_T written = 0;
		assert_hr(mb_virtual_query(c, p, &mbi, sizeof(mbi), &written), S_OK);
		assert_int_equal(mbi.State, MEM_COMMIT);
		assert_ptr_equal(mbi.AllocationBase, p);
		assert_int_equal(mbi.RegionSize, block);
		assert_pattern(p, block, 1000 + i);
		assert_hr(release(c, p), S_OK);
	}
	mb_client_stats s1 = stats_of(c);
	assert_u64(s1.round_trips, s0.round_trips);
	assert_u64(s1.alloc_calls - s0.alloc_calls, 300);
	assert_u64(s1.alloc_remote, s0.alloc_remote);
	assert_u64(s1.free_remote, s0.free_remote);
	assert_u64(s1.local_reserves - s0.local_reserves, 300);
	assert_u64(s1.local_releases - s0.local_releases, 300);
	/* The broker's figures are exact: nothing of it is left, in the books or the section. */
	st = status(c);
	assert_u64(st.committed, block);
	assert_u64(st.total_committed, block);
	assert_u64(st.reservations, 1);
	assert_u64(st.reserved, block);
	assert_u64(st.section_allocated, block);
	assert_pattern(first, block, 7);

	/* Long-lived reservations: reported in Syncs as the credit runs out, with their commits. */
	enum { KEEP = 400 };
	static uint8_t *kept[KEEP];
	for (int i = 0; i < KEEP; i++) {
		assert_hr(mb_virtual_alloc(c, NULL, 64 * 1024, MEM_RESERVE | MEM_COMMIT,
					   PAGE_READWRITE, eTaskCritical, (void **)&kept[i]),
			  S_OK);
		fill(kept[i], 64 * 1024, 5000 + (uint64_t)i);
	}
	mb_client_stats s2 = stats_of(c);
	assert_u64_ge(s2.syncs, s1.syncs + 1);
	/* Round trips stay a small share of the calls. */
	assert_u64_le(s2.alloc_remote - s1.alloc_remote, KEEP / 10);
	st = status(c);
	assert_u64(st.reservations, 1 + KEEP);
	assert_u64(st.committed, block + KEEP * 64 * 1024);
	assert_u64(st.total_committed, block + KEEP * 64 * 1024);

	/* A round trip about a reservation the broker has not heard of reports it first: a commit
	 * larger than the commit credit in a fresh local reservation. */
	uint8_t *big = reserve(c, 16 * MiB);
	assert_hr(commit_at(c, big, 8 * MiB, eTaskCritical), S_OK);
	fill(big, 4 * MiB, 9);
	fill(big + 4 * MiB, 4 * MiB, 10);
	assert_hr(decommit(c, big, 4 * MiB), S_OK);
	MEMORY_BASIC_INFORMATION mbi;
	SIZE_T written = 0;
	assert_hr(mb_virtual_query(c, big, &mbi, sizeof(mbi), &written), S_OK);
	assert_int_equal(mbi.State, MEM_RESERVE);
	assert_int_equal(mbi.RegionSize, 4 * MiB);
	assert_hr(commit_at(c, big, 4 * MiB, eTaskCritical), S_OK);
	assert_zero(big, 4 * MiB);
	assert_hr(decommit(c, big, 4 * MiB), S_OK);
	assert_pattern(big + 4 * MiB, 4 * MiB, 10);
	st = status(c);
	assert_u64(st.committed, block + KEEP * 64 * 1024 + 4 * MiB);

	for (int i = 0; i < KEEP; i++) {
		assert_pattern(kept[i], 64 * 1024, 5000 + (uint64_t)i);
		assert_hr(release(c, kept[i]), S_OK);
	}
	assert_hr(release(c, big), S_OK);
	assert_hr(release(c, first), S_OK);
	st = status(c);
	assert_u64(st.committed, 0);
	assert_u64(st.total_committed, 0);
	assert_u64(st.reservations, 0);
	assert_u64(st.section_allocated, 0);
	fx_finish(f);
}

/* ---- 1d. decommits and releases of pages the broker knows, without a round trip ---- */

/* Committed bytes of the client's local frees the broker has not booked yet (the bound's
 * measure), read from the client object. */
static uint64_t unreported_freed(mb_client *c)
{
	uint64_t bytes = 0;
	pthread_rwlock_rdlock(&c->map_lock);
	for (int i = 0; i < c->npending_free; i++)
		bytes += c->pending_free[i].bytes;
	for (int i = 0; i < c->ninflight_free; i++)
		bytes += c->inflight_free[i].bytes;
	pthread_rwlock_unlock(&c->map_lock);
	return bytes;
}

static void assert_free_bound(mb_client *c)
{
	uint64_t target = __atomic_load_n(&c->credit_word->target, __ATOMIC_ACQUIRE);
	assert_true(target >= DEFAULT_CREDIT && target <= MAX_CREDIT);
	assert_u64_le(unreported_freed(c), target);
	assert_true(c->npending_free <= MB_WIRE_MAX_SYNC_FREES);
}

static void test_reported_frees_skip_round_trip(void **state)
{
	fx *f = *state;
	fx_start(f, (const char *[]){"--budget", "256M", NULL});
	mb_client *c = fx_connect(f);
	mb_session_status st;

	/* A reservation and 2 MiB of commits the broker knows of: a round-trip reserve and commit,
	 * a local commit, then a Sync (what a climbing heap does when its credit runs out). */
	uint8_t *a = reserve(c, 4 * MiB);
	assert_hr(commit_at(c, a, MiB, eTaskCritical), S_OK);
	assert_hr(commit_at(c, a + MiB, MiB, eTaskCritical), S_OK);
	fill(a, 2 * MiB, 1);
	assert_hr(mb_credit_sync(c), S_OK);
	assert_u64(c->npending, 0);
	st = status(c);
	assert_u64(st.committed, 2 * MiB);
	assert_u64(st.reservations, 1);

	/* A decommit across the round-trip commit and the reported local one: done locally. */
	mb_client_stats s0 = stats_of(c);
	assert_hr(decommit(c, a + MiB / 2, MiB), S_OK);
	mb_client_stats s1 = stats_of(c);
	assert_u64(s1.round_trips, s0.round_trips);
	assert_u64(s1.free_remote, s0.free_remote);
	assert_u64(s1.local_decommits, s0.local_decommits + 1);
	assert_u64(unreported_freed(c), MiB);
	assert_free_bound(c);
	MEMORY_BASIC_INFORMATION mbi;
	SIZE_T written = 0;
	assert_hr(mb_virtual_query(c, a + MiB / 2, &mbi, sizeof(mbi), &written), S_OK);
	assert_int_equal(mbi.State, MEM_RESERVE);
	assert_int_equal(mbi.RegionSize, MiB);
	/* Win32's answers are the client's own, as for a round trip: a decommit running past the
	 * reservation is refused, and nothing changes. */
	assert_hr(decommit(c, a + 3 * MiB, 2 * MiB), E_INVALIDARG);

	/* Committed again before the broker heard of the decommit: the Sync books the free
	 * before the commit, so the pages end up committed once, and read as fresh pages. */
	assert_hr(commit_at(c, a + MiB / 2, MiB / 2, eTaskCritical), S_OK);
	assert_zero(a + MiB / 2, MiB / 2);
	fill(a + MiB / 2, MiB / 2, 2);
	st = status(c); /* reports the free first */
	assert_u64(unreported_freed(c), 0);
	assert_u64(st.committed, 3 * MiB / 2);
	assert_u64(st.total_committed, 3 * MiB / 2);
	assert_u64(st.section_allocated, 3 * MiB / 2);
	assert_pattern(a, MiB / 2, 1);
	assert_pattern(a + MiB / 2, MiB / 2, 2);
	for (uint64_t pg = 3 * MiB / 2 / PAGE; pg < 2 * MiB / PAGE; pg++)
		assert_true(page_holds(a, pg, 1));

	/* Released locally, and its addresses reserved again at once (from the reservation
	 * credit, also locally): the Sync books the release before the new reservation. */
	s0 = stats_of(c);
	assert_hr(release(c, a), S_OK);
	assert_free_bound(c);
	uint8_t *again = NULL;
	assert_hr(mb_virtual_alloc(c, a, 4 * MiB, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
				   eTaskCritical, (void **)&again),
		  S_OK);
	assert_ptr_equal(again, a);
	assert_zero(again, 4 * MiB);
	fill(again, 4 * MiB, 3);
	s1 = stats_of(c);
	assert_u64(s1.round_trips, s0.round_trips);
	assert_u64(s1.local_releases, s0.local_releases + 1);
	assert_u64(s1.local_reserves, s0.local_reserves + 1);
	st = status(c);
	assert_u64(st.reservations, 1);
	assert_u64(st.reserved, 4 * MiB);
	assert_u64(st.committed, 4 * MiB);
	assert_u64(st.total_committed, 4 * MiB);
	assert_u64(st.section_allocated, 4 * MiB);
	assert_pattern(again, 4 * MiB, 3);

	/* The bound: 40 reported reservations of 1 MiB released one after the other. The
	 * unreported frees never exceed the published target nor the list, so Syncs happen on
	 * the way; none of the releases is a round trip of its own. */
	enum { N = 40 };
	static uint8_t *blocks[N];
	for (int i = 0; i < N; i++) {
		assert_hr(mb_virtual_alloc(c, NULL, MiB, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
					   eTaskCritical, (void **)&blocks[i]),
			  S_OK);
		fill(blocks[i], MiB, 100 + (uint64_t)i);
	}
	assert_hr(mb_credit_sync(c), S_OK);
	assert_u64(status(c).reservations, N + 1);
	s0 = stats_of(c);
	for (int i = 0; i < N; i++) {
		assert_hr(release(c, blocks[i]), S_OK);
		assert_free_bound(c);
		for (int j = i + 1; j < N; j += 7)
			assert_pattern(blocks[j], MiB, 100 + (uint64_t)j);
	}
	s1 = stats_of(c);
	assert_u64(s1.local_releases, s0.local_releases + N);
	assert_u64_ge(s1.syncs, s0.syncs + 1);
	/* Only Syncs crossed, each carrying many releases. */
	assert_u64(s1.round_trips - s0.round_trips, s1.syncs - s0.syncs);
	assert_u64_le(s1.free_remote - s0.free_remote, N / 4);
	st = status(c);
	assert_u64(st.reservations, 1);
	assert_u64(st.committed, 4 * MiB);
	assert_u64(st.total_committed, 4 * MiB);
	assert_u64(st.section_allocated, 4 * MiB);
	assert_pattern(again, 4 * MiB, 3);

	assert_hr(release(c, again), S_OK);
	st = status(c);
	assert_u64(st.committed, 0);
	assert_u64(st.total_committed, 0);
	assert_u64(st.reservations, 0);
	assert_u64(st.section_allocated, 0);
	fx_finish(f);
}

/* A forger's audit watch: its section holds no more than it is charged for again. */
static bool forged_pages_dropped(void *arg)
{
	mb_client *y = arg;
	mb_session_status st;
	return status_try(y, &st) == S_OK && st.offences >= 1 &&
	       st.section_allocated <= st.committed;
}

static void test_forged_free_gains_nothing(void **state)
{
	fx *f = *state;
	fx_start(f, (const char *[]){"--budget", "64M", NULL});
	mb_client *observer = fx_connect(f), *y = fx_connect(f);
	mb_session_status st;

	uint8_t *a = reserve(y, 4 * MiB);
	assert_hr(commit_at(y, a, 2 * MiB, eTaskCritical), S_OK);
	fill(a, 2 * MiB, 4);
	st = status(y);
	assert_u64(st.committed, 2 * MiB);

	/* A free nobody did: reported without closing or punching anything, so the client keeps
	 * its pages and the broker refunds them. */
	pthread_rwlock_wrlock(&y->map_lock);
	y->pending_free[y->npending_free++] = (mb_local_free){(uintptr_t)a, 2 * MiB, false, 0};
	pthread_rwlock_unlock(&y->map_lock);
	assert_hr(mb_credit_sync(y), S_OK);
	assert_int_equal(a[0], (uint8_t)pattern(4, 0)); /* still there, for now */
	/* The audit finds pages nobody accounts for and drops them: all it gained was the time
	 * until the audit. */
	assert_waited(forged_pages_dropped, y, "the audit to drop the forger's pages");
	st = status(y);
	assert_u64(st.committed, 0);
	assert_u64(st.section_allocated, 0);
	assert_true(st.offences >= 1);
	assert_int_equal(a[0], 0);
	assert_int_equal(a[2 * MiB - 1], 0);

	/* A free of something it does not hold is refused; the books are unchanged. */
	uint8_t *b = reserve(y, MiB);
	assert_hr(commit_at(y, b, MiB, eTaskCritical), S_OK);
	st = status(y);
	pthread_rwlock_wrlock(&y->map_lock);
	y->pending_free[y->npending_free++] = (mb_local_free){(uintptr_t)a + 8 * MiB, 0, true, 0};
	pthread_rwlock_unlock(&y->map_lock);
	assert_hr(mb_credit_sync(y), E_INVALIDARG);
	mb_session_status st2 = status(y);
	assert_u64(st2.committed, st.committed);
	assert_u64(st2.reservations, st.reservations);
	assert_u64(st2.total_committed, st.total_committed);
	assert_u64(status(observer).offences, 0);
	fx_finish(f);
}

/* ---- 2. --commit-credit 0 ---- */

static void test_credit_off(void **state)
{
	fx *f = *state;
	fx_start(f, (const char *[]){"--budget", "256M", "--commit-credit", "0", NULL});
	mb_client *c = fx_connect(f);
	mb_session_status st;

	uint8_t *base = reserve(c, 4 * MiB);
	assert_hr(commit_at(c, base, CHUNK, eTaskCritical), S_OK);
	fill(base, CHUNK, 2);
	for (uint64_t i = 0; i < 100; i++) {
		uint8_t *p = base + CHUNK * (1 + (i * 13) % 63);
		assert_hr(commit_at(c, p, CHUNK, eTaskCritical), S_OK);
		assert_zero(p, CHUNK);
		fill(p, CHUNK, 200 + i);
		if (i % 25 == 0) {
			st = status(c);
			assert_u64(st.committed, 2 * CHUNK);
		}
		assert_hr(decommit(c, p, CHUNK), S_OK);
	}
	uint8_t *heap = reserve(c, 4 * MiB);
	for (uint64_t i = 0; i < 50; i++) {
		assert_hr(commit_at(c, heap + i * CHUNK, CHUNK, eTaskCritical), S_OK);
		fill(heap + i * CHUNK, CHUNK, 300 + i);
	}
	st = status(c);
	assert_u64(st.committed, 51 * CHUNK);
	assert_u64(st.total_committed, 51 * CHUNK);
	assert_u64(st.credit, 0);
	assert_u64(st.total_credit, 0);
	assert_u64(st.local_commits, 0);
	assert_u64(st.local_decommits, 0);
	assert_u64(st.syncs, 0);
	assert_pattern(base, CHUNK, 2);
	for (uint64_t i = 0; i < 50; i++)
		assert_pattern(heap + i * CHUNK, CHUNK, 300 + i);
	assert_hr(release(c, base), S_OK);
	assert_hr(release(c, heap), S_OK);
	st = status(c);
	assert_u64(st.committed, 0);
	assert_u64(st.total_committed, 0);
	fx_finish(f);
}

/* ---- 3. revocation for another process's commit ---- */

/* What the holder process answers to every command. */
typedef struct holder_reply {
	int32_t hr;	 /* of the command's own call */
	int32_t intact;	 /* 1 if every chunk it wrote still holds its data */
	uint64_t credit; /* its session's figures after the command */
	uint64_t committed;
	uint64_t local_commits;
	uint64_t syncs;
} holder_reply;

/* Child mode: a client in its own process. Commands on fd 3, one byte each: 'c' commits and
 * writes its next 64 KiB chunk, 's' only answers, 'q' quits. Replies on fd 4. */
static int holder_main(const char *address)
{
	mb_client *c = NULL;
	void *mem = NULL;
	uint64_t n = 0;
	char cmd;

	if (mb_connect(address, &c) != S_OK)
		return 10;
	if (mb_virtual_alloc(c, NULL, 4 * MiB, MEM_RESERVE, PAGE_NOACCESS, eTaskCritical, &mem) !=
	    S_OK)
		return 11;
	uint8_t *base = mem;
	while (read(3, &cmd, 1) == 1 && cmd != 'q') {
		holder_reply r = {.hr = S_OK, .intact = 1};
		mb_session_status st;
		if (cmd == 'c') {
			r.hr = commit_at(c, base + n * CHUNK, CHUNK, eTaskCritical);
			if (r.hr == S_OK) {
				fill(base + n * CHUNK, CHUNK, 77 + n);
				n++;
			}
		}
		for (uint64_t i = 0; i < n; i++)
			if (bad_page(base + i * CHUNK, CHUNK, 77 + i, false) >= 0)
				r.intact = 0;
		if (mb_get_session_status(c, &st) != S_OK)
			return 12;
		r.credit = st.credit;
		r.committed = st.committed;
		r.local_commits = st.local_commits;
		r.syncs = st.syncs;
		if (write(4, &r, sizeof(r)) != (ssize_t)sizeof(r))
			return 13;
	}
	mb_disconnect(c);
	return 0;
}

static void holder_spawn(fx *f)
{
	int cmd[2], reply[2];

	assert_int_equal(pipe(cmd), 0);
	assert_int_equal(pipe(reply), 0);
	f->child = fork();
	assert_true(f->child >= 0);
	if (f->child == 0) {
		dup2(cmd[0], 3);
		dup2(reply[1], 4);
		/* Never outlive a test that failed before it could stop this process. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		/* A fresh process: nng may not be used after fork in this one. */
		execl(self_path, self_path, "--holder", f->broker.address, (char *)NULL);
		_exit(127);
	}
	close(cmd[0]);
	close(reply[1]);
	f->cmd_fd = cmd[1];
	f->reply_fd = reply[0];
}

static holder_reply holder_ask(fx *f, char cmd)
{
	holder_reply r;
	assert_int_equal(write(f->cmd_fd, &cmd, 1), 1);
	/* A short read means the holder died: its exit status says which step failed. */
	ssize_t n = read(f->reply_fd, &r, sizeof(r));
	if (n != (ssize_t)sizeof(r)) {
		int status = 0;
		waitpid(f->child, &status, 0);
		f->child = -1;
		fail_msg("the holder process died (wait status 0x%x, see holder_main)", status);
	}
	return r;
}

static void test_credit_taken_back_for_another_process(void **state)
{
	fx *f = *state;
	const uint64_t budget = 64 * MiB;
	fx_start(f, (const char *[]){"--budget", "64M", NULL});

	/* A commits once (a round trip) and holds the whole default credit, unused. */
	holder_spawn(f);
	holder_reply a = holder_ask(f, 'c');
	assert_hr(a.hr, S_OK);
	assert_u64(a.credit, DEFAULT_CREDIT);
	assert_u64(a.committed, CHUNK);

	/* B never committed: all credit in the broker is A's, and it is not counted as used. */
	mb_client *b = fx_connect(f);
	mb_session_status st = status(b);
	assert_u64(st.credit, 0);
	assert_u64(st.total_credit, DEFAULT_CREDIT);
	assert_u64(st.total_committed, CHUNK);

	/* B's commit fits under the task ceiling only without A's unused credit, and a
	 * task-level commit never waits: it succeeds only if that credit is taken back. */
	const uint64_t want = 56 * MiB;
	assert_true(CHUNK + want <= share_of(budget, 900));
	assert_true(CHUNK + DEFAULT_CREDIT + want > share_of(budget, 900));
	uint8_t *big = reserve(b, want);
	assert_hr(commit_at(b, big, want, eTaskCritical), S_OK);
	st = status(b);
	assert_u64(st.committed, want);
	assert_u64(st.total_committed, want + CHUNK);
	assert_u64(st.total_credit, 0);
	/* Above 80% of the budget, B's commit brings it no credit either. */
	assert_u64(st.credit, 0);
	/* Taking the credit back is not pressure: under 90% used, still Neutral. */
	assert_int_equal(st.pressure, eMemoryAvailableNeutral);

	a = holder_ask(f, 's');
	assert_u64(a.credit, 0);
	assert_u64(a.committed, CHUNK);
	assert_int_equal(a.intact, 1);

	/* A still commits, by round trip now, and is granted nothing above 80%. */
	uint64_t local = a.local_commits;
	a = holder_ask(f, 'c');
	assert_hr(a.hr, S_OK);
	assert_u64(a.local_commits, local);
	assert_u64(a.committed, 2 * CHUNK);
	assert_u64(a.credit, 0);
	assert_int_equal(a.intact, 1);

	/* Once B's memory is back, A's next round trip brings credit again, and the commit after
	 * it needs none. B holds no credit (none is granted above 80%), so a release it does
	 * locally is reported at once rather than at some later Sync; one larger than the bound
	 * on unreported frees (the credit target) goes to the broker itself. */
	uint8_t *small = reserve(b, MiB);
	assert_hr(commit_at(b, small, MiB, eTaskCritical), S_OK);
	mb_client_stats bs = stats_of(b);
	assert_hr(release(b, small), S_OK);
	mb_client_stats bs2 = stats_of(b);
	assert_u64(bs2.local_releases, bs.local_releases + 1);
	assert_u64(bs2.syncs, bs.syncs + 1);
	assert_u64(status(b).committed, want);
	assert_hr(release(b, big), S_OK);
	mb_client_stats bs3 = stats_of(b);
	assert_u64(bs3.local_releases, bs2.local_releases);
	assert_u64(bs3.free_remote, bs2.free_remote + 1);
	assert_u64(bs3.syncs, bs2.syncs);
	a = holder_ask(f, 'c');
	assert_hr(a.hr, S_OK);
	assert_u64(a.credit, DEFAULT_CREDIT);
	a = holder_ask(f, 'c');
	assert_hr(a.hr, S_OK);
	assert_u64(a.local_commits, local + 1);
	assert_u64(a.committed, 4 * CHUNK);
	assert_int_equal(a.intact, 1);
	st = status(b);
	assert_u64(st.total_committed, 4 * CHUNK);
	assert_u64(st.total_credit, DEFAULT_CREDIT - CHUNK);

	char q = 'q';
	assert_int_equal(write(f->cmd_fd, &q, 1), 1);
	int wstatus = -1;
	assert_int_equal(waitpid(f->child, &wstatus, 0), f->child);
	f->child = -1;
	assert_true(WIFEXITED(wstatus));
	assert_int_equal(WEXITSTATUS(wstatus), 0);
	fx_finish(f);
}

/* ---- 3a. past 80%, credit for eAppDomainCritical and eProcessCritical commits ---- */

static void test_credit_per_level(void **state)
{
	fx *f = *state;
	const uint64_t budget = 64 * MiB;
	fx_start(f, (const char *[]){"--budget", "64M", NULL});
	mb_client *b = fx_connect(f), *a = fx_connect(f);
	mb_session_status st;

	/* B takes the budget past 80 % with task-level commits: no credit for anyone's task
	 * commits from here on. */
	uint8_t *big = reserve(b, 60 * MiB);
	assert_hr(commit_at(b, big, 52 * MiB, eTaskCritical), S_OK);
	assert_u64(status(b).credit, 0);

	/* A's first AppDomain commit is a round trip and brings credit for that level. */
	uint8_t *p = reserve(a, 4 * MiB);
	assert_hr(commit_at(a, p, CHUNK, eAppDomainCritical), S_OK);
	st = status(a);
	assert_u64(st.credit, DEFAULT_CREDIT);
	assert_u64_le(st.total_committed + st.total_credit, share_of(budget, 970));

	/* The next AppDomain and ProcessCritical commits need no round trip; a task commit
	 * does (the credit is not for it; it fits beside it under the task ceiling). */
	mb_client_stats s0 = stats_of(a);
	for (uint64_t i = 1; i <= 8; i++)
		assert_hr(commit_at(a, p + i * CHUNK, CHUNK, eAppDomainCritical), S_OK);
	assert_hr(commit_at(a, p + 9 * CHUNK, CHUNK, eProcessCritical), S_OK);
	mb_client_stats s1 = stats_of(a);
	assert_u64(s1.round_trips, s0.round_trips);
	assert_u64(s1.local_commits, s0.local_commits + 9);
	assert_hr(commit_at(a, p + 10 * CHUNK, CHUNK, eTaskCritical), S_OK);
	mb_client_stats s2 = stats_of(a);
	assert_u64(s2.alloc_remote, s1.alloc_remote + 1);
	assert_u64(s2.local_commits, s1.local_commits);
	fill(p, 11 * CHUNK, 21);

	/* The books are exact: used credit counts as committed, unused does not. */
	st = status(a);
	assert_u64(st.committed, 11 * CHUNK);
	assert_u64(st.total_committed, 52 * MiB + 11 * CHUNK);
	assert_u64(st.credit, DEFAULT_CREDIT - 9 * CHUNK);
	assert_u64_le(st.total_committed + st.total_credit, share_of(budget, 970));

	/* B's task commit fits only without A's unused credit: it is taken back first. */
	assert_true(52 * MiB + 11 * CHUNK + 4 * MiB <= share_of(budget, 900));
	assert_true(52 * MiB + 11 * CHUNK + 4 * MiB + st.credit > share_of(budget, 900));
	assert_hr(commit_at(b, big + 52 * MiB, 4 * MiB, eTaskCritical), S_OK);
	st = status(a);
	assert_u64(st.credit, 0);
	assert_u64(st.total_credit, 0);
	assert_u64(st.committed, 11 * CHUNK);
	assert_u64(st.total_committed, 56 * MiB + 11 * CHUNK);
	assert_pattern(p, 11 * CHUNK, 21);

	/* A's next AppDomain commit asks, and brings credit again within the ceiling. */
	assert_hr(commit_at(a, p + 11 * CHUNK, CHUNK, eAppDomainCritical), S_OK);
	st = status(a);
	assert_true(st.credit > 0);
	assert_u64_le(st.total_committed + st.total_credit, share_of(budget, 970));
	assert_u64(st.committed, 12 * CHUNK);
	assert_u64(st.total_committed, 56 * MiB + 12 * CHUNK);

	assert_hr(release(a, p), S_OK);
	assert_hr(release(b, big), S_OK);
	st = status(a);
	assert_u64(st.total_committed, 0);
	fx_finish(f);
}

/* ---- 3b. no credit above 80%; Low pressure takes it back ---- */

static void test_credit_limit_and_low_pressure(void **state)
{
	fx *f = *state;
	const uint64_t budget = 64 * MiB;
	const uint64_t limit = share_of(budget, 800);
	fx_start(f, (const char *[]){"--budget", "64M", NULL});
	mb_client *c = fx_connect(f), *d = fx_connect(f), *e = fx_connect(f);
	mb_session_status st;

	/* 75% committed: credit is granted only up to 80%, so C gets part of the default. */
	uint8_t *cmem = reserve(c, 48 * MiB);
	assert_hr(commit_at(c, cmem, 48 * MiB, eTaskCritical), S_OK);
	st = status(c);
	assert_u64(st.committed, 48 * MiB);
	assert_true(st.credit > 0 && st.credit < DEFAULT_CREDIT);
	assert_u64_le(st.total_committed + st.total_credit, limit);
	const uint64_t ccredit = st.credit;

	/* To ~85%: a fresh commit above 80% brings no credit. */
	uint8_t *dmem = reserve(d, 8 * MiB);
	assert_hr(commit_at(d, dmem, 6 * MiB, eTaskCritical), S_OK);
	st = status(d);
	assert_u64(st.credit, 0);
	assert_u64(st.total_committed, 54 * MiB);
	assert_hr(commit_at(d, dmem + 6 * MiB, CHUNK, eTaskCritical), S_OK);
	st = status(d);
	assert_u64(st.credit, 0);
	assert_u64(st.local_commits, 0);
	assert_u64(st.total_credit, ccredit); /* C's, which nobody needed yet */

	/* E's AppDomain commit fits beside C's credit (97% ceiling) but takes the memory in use
	 * past 90%: entering Low takes all unused credit back. */
	const uint64_t emore = 4 * MiB;
	assert_true(54 * MiB + CHUNK + ccredit + emore <= share_of(budget, 970));
	assert_true(54 * MiB + CHUNK + emore >= share_of(budget, 900));
	uint8_t *emem = reserve(e, emore);
	assert_hr(commit_at(e, emem, emore, eAppDomainCritical), S_OK);
	st = status(c);
	assert_int_equal(st.pressure, eMemoryAvailableLow);
	assert_u64(st.credit, 0);
	assert_u64(st.committed, 48 * MiB);
	assert_u64(st.total_committed, 58 * MiB + CHUNK);
	/* What is out now is E's, granted after the pressure turned: for its AppDomain commits
	 * only, within their ceiling. */
	assert_u64(st.total_credit, status(e).credit);
	assert_u64_le(st.total_committed + st.total_credit, share_of(budget, 970));

	/* C still commits, by round trip, once E's memory is back. */
	assert_hr(release(e, emem), S_OK);
	uint8_t *cmore = reserve(c, MiB);
	assert_hr(commit_at(c, cmore, CHUNK, eTaskCritical), S_OK);
	st = status(c);
	assert_u64(st.committed, 48 * MiB + CHUNK);
	assert_u64(st.credit, 0);
	assert_u64(st.local_commits, 0);
	fx_finish(f);
}

/* ---- 4. the audit does not punish local commits ---- */

typedef struct churn {
	mb_client *c;
	uint8_t *base;
	uint64_t n;
	uint64_t failures;
} churn;

/* One local commit, write, check, decommit cycle, at a rotating offset: the audit runs between
 * any two of these steps. Records failures rather than asserting (it runs inside a poll). */
static void churn_tick(void *arg)
{
	churn *ch = arg;
	uint8_t *p = ch->base + CHUNK * (ch->n % 32);
	if (commit_at(ch->c, p, CHUNK, eTaskCritical) != S_OK) {
		ch->failures++;
		return;
	}
	if (bad_page(p, CHUNK, 0, true) >= 0)
		ch->failures++;
	fill(p, CHUNK, 5000 + ch->n);
	if (bad_page(p, CHUNK, 5000 + ch->n, false) >= 0)
		ch->failures++;
	if (decommit(ch->c, p, CHUNK) != S_OK)
		ch->failures++;
	ch->n++;
}

static void test_audit_tolerates_local_commits(void **state)
{
	fx *f = *state;
	fx_start(f, (const char *[]){"--budget", "64M", "--audit-interval", "50", NULL});
	mb_client *h = fx_connect(f);
	canary cn;
	mb_session_status st;

	uint8_t *base = reserve(h, 8 * MiB);
	assert_hr(commit_at(h, base, CHUNK, eTaskCritical), S_OK);
	fill(base, CHUNK, 4);
	/* 2 MiB committed locally and written, every page; never reported (no Sync). */
	uint8_t *local = base + MiB;
	for (uint64_t i = 0; i < 32; i++)
		assert_hr(commit_at(h, local + i * CHUNK, CHUNK, eTaskCritical), S_OK);
	fill(local, 2 * MiB, 40);
	st = status(h);
	assert_u64(st.local_commits, 32);
	assert_u64(st.syncs, 0);
	assert_u64(st.committed, CHUNK + 2 * MiB);

	/* Two audits at least, while the client keeps committing and decommitting locally. */
	churn ch = {.c = h, .base = base + 4 * MiB};
	canary_init(f, &cn);
	cn.tick = churn_tick;
	cn.tick_arg = &ch;
	canary_two_audits(&cn);
	canary_fini(&cn);
	assert_u64(ch.failures, 0);
	assert_true(ch.n > 0);

	st = status(h);
	assert_u64(st.offences, 0);
	assert_u64(st.syncs, 0); /* the audited pages were still unreported */
	assert_u64(st.committed, CHUNK + 2 * MiB);
	assert_u64(st.total_committed, CHUNK + 2 * MiB);
	assert_pattern(base, CHUNK, 4);
	assert_pattern(local, 2 * MiB, 40);
	assert_hr(release(h, base), S_OK);
	st = status(h);
	assert_u64(st.committed, 0);
	assert_u64(st.section_allocated, 0);
	fx_finish(f);
}

/* ---- 5. a client that forges its credit ---- */

/* The observer alone with the broker, and nothing committed. */
static bool alone_and_empty(void *arg)
{
	mb_session_status st;
	return status_try(arg, &st) == S_OK && st.sessions == 1 && st.total_committed == 0;
}

typedef struct forger_watch {
	mb_client *y, *observer;
	uint64_t worst_total;	  /* highest total_committed seen by the observer */
	uint64_t worst_committed; /* highest committed the broker showed for Y */
	uint64_t granted;	  /* what Y may hold: its commit and its credit */
	bool ended;		  /* Y's section was ended for repeated offences */
} forger_watch;

static bool forger_punished(void *arg)
{
	forger_watch *w = arg;
	mb_session_status o, y;
	if (status_try(w->observer, &o) == S_OK && o.total_committed > w->worst_total)
		w->worst_total = o.total_committed;
	if (status_try(w->y, &y) != S_OK) {
		/* On a loaded machine audits may fall in the middle of the writes three times:
		 * the third offence ends the forger's section, which is punched empty. */
		w->ended = true;
		return true;
	}
	if (y.committed > w->worst_committed)
		w->worst_committed = y.committed;
	/* An audit that ran while the pages were still being written punished only some of them:
	 * wait for one that found them all. */
	return y.offences > 0 && y.section_allocated <= y.committed;
}

static void test_forged_credit_is_bounded(void **state)
{
	fx *f = *state;
	const uint64_t budget = 16 * MiB;
	/* An audit every second (the default, said here since the test depends on it): the
	 * forger's writes (below) take far less, so they are all counted as one or two offences,
	 * never the third that would disconnect it. */
	fx_start(f, (const char *[]){"--budget", "16M", "--audit-interval", "1000", NULL});
	mb_client *observer = fx_connect(f), *y = fx_connect(f);
	mb_session_status st;

	/* 36 MiB of address space, more than the whole budget. */
	const uint64_t span = 36 * MiB;
	uint8_t *base = reserve(y, span + CHUNK);
	assert_hr(commit_at(y, base, CHUNK, eTaskCritical), S_OK);
	fill(base, CHUNK, 5);
	st = status(y);
	assert_u64(st.credit, DEFAULT_CREDIT);
	const uint64_t granted = CHUNK + st.credit;

	/* The forgery: the credit word is writable by the client (it must be, to take credit). */
	__atomic_store_n(&y->credit_word->credit, (uint64_t)1 << 40, __ATOMIC_RELEASE);
	uint8_t *forged = base + CHUNK;
	for (uint64_t i = 0; i < span / MiB; i++)
		assert_hr(commit_at(y, forged + i * MiB, MiB, eTaskCritical), S_OK);
	st = status(y);
	/* All of it done locally: the broker never heard of any of it. */
	assert_u64(st.local_commits, span / MiB);
	assert_u64(st.syncs, 0);
	/* Its books do not believe the word beyond what it granted. */
	assert_u64_le(st.committed, granted);
	assert_u64_le(st.credit, DEFAULT_CREDIT);
	assert_u64_le(st.total_committed, budget);
	for (uint64_t a = 0; a < span; a += PAGE)
		forged[a] = 0xEE;

	forger_watch w = {.y = y, .observer = observer, .granted = granted};
	assert_waited(forger_punished, &w, "the audit to count the forger's writes");
	assert_u64_le(w.worst_total, budget);
	assert_u64_le(w.worst_committed, granted);
	if (w.ended) {
		/* Written before any audit could count it: punched when the section ended. The
		 * last pages may have been written after that (under load the third audit can
		 * come while the loop above still runs): the memfd then lives only in the
		 * forger's own mapping, the broker holds nothing of it (checked below). */
		assert_int_equal(forged[0], 0);
		assert_u64(status(observer).offences, 0);
		fx_disconnect(f, y);
		assert_waited(alone_and_empty, observer, "the forger's memory to be gone");
		fx_finish(f);
		return;
	}
	st = status(y);
	assert_true(st.offences >= 1);
	assert_u64_le(st.total_committed, budget);
	/* What it wrote beyond its commits is gone: it gained only until the audit. */
	assert_u64_le(st.section_allocated, granted);
	assert_int_equal(forged[0], 0);
	assert_int_equal(forged[span - PAGE], 0);
	assert_pattern(base, CHUNK, 5);
	assert_u64(status(observer).offences, 0);
	/* The session ends asynchronously in the broker: wait for it. */
	fx_disconnect(f, y);
	assert_waited(alone_and_empty, observer, "the forger's session and memory to be gone");
	fx_finish(f);
}

/* ---- 6. broker restart with unreported local commits ---- */

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

static void test_restart_with_pending_local_commits(void **state)
{
	fx *f = *state;
	const char *const args[] = {"--budget", "64M", "--audit-interval", "50", NULL};
	char address[sizeof(f->broker.address)];
	mb_session_status st;

	fx_start(f, args);
	snprintf(address, sizeof(address), "%s", f->broker.address);
	mb_client *c = fx_connect(f);
	uint8_t *base = reserve(c, 8 * MiB);
	assert_hr(commit_at(c, base, CHUNK, eTaskCritical), S_OK);
	fill(base, CHUNK, 6);
	uint8_t *local = base + MiB;
	for (uint64_t i = 0; i < 16; i++)
		assert_hr(commit_at(c, local + i * CHUNK, CHUNK, eTaskCritical), S_OK);
	fill(local, MiB, 60);
	st = status(c);
	assert_u64(st.local_commits, 16);
	assert_u64(st.syncs, 0);
	assert_u64(st.committed, CHUNK + MiB);

	/* The broker dies with a MiB of commits it never heard of. */
	mb_test_broker_kill(&f->broker);
	f->running = false;
	assert_pattern(base, CHUNK, 6);
	assert_pattern(local, MiB, 60);
	assert_waited(call_fails_unavailable, c, "the client to notice the broker is gone");

	assert_int_equal(mb_test_broker_start_at(&f->broker, address, args), 0);
	f->running = true;
	assert_waited(call_succeeds, c, "the client to reconnect");
	st = status(c);
	/* Re-registration counted the local commits as commits. */
	assert_u64(st.committed, CHUNK + MiB);
	assert_u64(st.total_committed, CHUNK + MiB);
	assert_u64(st.reserved, 8 * MiB);
	assert_u64(st.offences, 0);
	assert_pattern(base, CHUNK, 6);
	assert_pattern(local, MiB, 60);

	/* The new broker's audit agrees (the canary proves two audits ran). */
	canary cn;
	canary_init(f, &cn);
	canary_two_audits(&cn);
	canary_fini(&cn);
	st = status(c);
	assert_u64(st.offences, 0);
	assert_u64(st.committed, CHUNK + MiB);
	assert_pattern(base, CHUNK, 6);
	assert_pattern(local, MiB, 60);

	/* Local commits work again: the first commit is a round trip that brings credit. */
	uint64_t before = st.local_commits;
	uint8_t *more = base + 4 * MiB;
	for (uint64_t i = 0; i < 10; i++) {
		assert_hr(commit_at(c, more + i * CHUNK, CHUNK, eTaskCritical), S_OK);
		assert_zero(more + i * CHUNK, CHUNK);
		fill(more + i * CHUNK, CHUNK, 600 + i);
	}
	st = status(c);
	assert_u64_ge(st.local_commits, before + 9);
	assert_u64(st.committed, CHUNK + MiB + 10 * CHUNK);
	assert_u64(st.total_committed, CHUNK + MiB + 10 * CHUNK);

	/* A local decommit of a new page and a round-trip decommit of a page committed locally
	 * under the old broker; both read as zero when committed again. */
	assert_hr(decommit(c, more + 9 * CHUNK, CHUNK), S_OK);
	assert_hr(decommit(c, local, CHUNK), S_OK);
	st = status(c);
	assert_u64(st.committed, MiB + 9 * CHUNK);
	assert_hr(commit_at(c, more + 9 * CHUNK, CHUNK, eTaskCritical), S_OK);
	assert_zero(more + 9 * CHUNK, CHUNK);
	assert_hr(commit_at(c, local, CHUNK, eTaskCritical), S_OK);
	assert_zero(local, CHUNK);
	for (uint64_t pg = CHUNK / PAGE; pg < MiB / PAGE; pg++)
		assert_true(page_holds(local, pg, 60));
	for (uint64_t i = 0; i < 9; i++)
		assert_pattern(more + i * CHUNK, CHUNK, 600 + i);
	st = status(c);
	assert_u64(st.committed, CHUNK + MiB + 10 * CHUNK);
	assert_hr(release(c, base), S_OK);
	st = status(c);
	assert_u64(st.committed, 0);
	assert_u64(st.total_committed, 0);
	assert_u64(st.section_allocated, 0);
	fx_finish(f);
}

/* ---- 7. mixed operations on local and reported pages ---- */

static void test_mixed_operations_keep_exact_books(void **state)
{
	fx *f = *state;
	fx_start(f, (const char *[]){"--budget", "64M", NULL});
	mb_client *c = fx_connect(f);
	mb_session_status st;
	void *out = NULL;

	uint8_t *base = reserve(c, 4 * MiB);
	/* [0, 64K) by round trip; [64K, 192K) locally, in two adjacent commits. */
	assert_hr(commit_at(c, base, CHUNK, eTaskCritical), S_OK);
	assert_hr(commit_at(c, base + CHUNK, CHUNK, eTaskCritical), S_OK);
	assert_hr(commit_at(c, base + 2 * CHUNK, CHUNK, eTaskCritical), S_OK);
	fill(base, 3 * CHUNK, 7);
	st = status(c);
	assert_u64(st.local_commits, 2);
	assert_u64(st.committed, 3 * CHUNK);

	/* A hole in the middle of the local range: done locally, the range split in two. */
	assert_hr(decommit(c, base + 2 * CHUNK, 8 * PAGE), S_OK);
	st = status(c);
	assert_u64(st.local_decommits, 1);
	assert_u64(st.committed, 3 * CHUNK - 8 * PAGE);

	/* A decommit across reported and local pages goes to the broker. */
	assert_hr(decommit(c, base + CHUNK / 2, CHUNK), S_OK);
	st = status(c);
	assert_u64(st.committed, 2 * CHUNK - 8 * PAGE);
	assert_u64(st.total_committed, 2 * CHUNK - 8 * PAGE);
	assert_pattern(base, CHUNK / 2, 7);

	/* A commit over everything: pages still unreported are reported first, none is charged
	 * twice, and the data in them is kept while the holes read as zero. */
	assert_hr(commit_at(c, base, 4 * CHUNK, eTaskCritical), S_OK);
	st = status(c);
	assert_u64(st.committed, 4 * CHUNK);
	assert_u64(st.total_committed, 4 * CHUNK);
	assert_pattern(base, CHUNK / 2, 7);
	assert_zero(base + CHUNK / 2, CHUNK);
	/* The pattern is indexed by page from base. */
	for (uint64_t pg = (3 * CHUNK / 2) / PAGE; pg < 3 * CHUNK / PAGE; pg++) {
		bool hole = pg >= 2 * CHUNK / PAGE && pg < 2 * CHUNK / PAGE + 8;
		if (hole)
			assert_zero(base + pg * PAGE, PAGE);
		else
			assert_true(page_holds(base, pg, 7));
	}
	assert_zero(base + 3 * CHUNK, CHUNK);

	/* MEM_RESET of pages committed locally: reported first, then reset; the undo keeps the
	 * data (nothing is under pressure here). */
	uint8_t *p = base + 8 * CHUNK;
	assert_hr(commit_at(c, p, CHUNK, eTaskCritical), S_OK);
	fill(p, CHUNK, 8);
	uint64_t syncs = status(c).syncs;
	assert_hr(mb_virtual_alloc(c, p, CHUNK, MEM_RESET, PAGE_READWRITE, eTaskCritical, &out),
		  S_OK);
	assert_hr(
	    mb_virtual_alloc(c, p, CHUNK, MEM_RESET_UNDO, PAGE_READWRITE, eTaskCritical, &out),
	    S_OK);
	st = status(c);
	assert_u64_ge(st.syncs, syncs + 1);
	assert_u64(st.committed, 5 * CHUNK);
	assert_pattern(p, CHUNK, 8);

	/* Releasing with local commits pending gives their credit back. */
	uint8_t *q = base + 12 * CHUNK;
	assert_hr(commit_at(c, q, CHUNK, eTaskCritical), S_OK);
	assert_u64(status(c).committed, 6 * CHUNK);
	assert_hr(release(c, base), S_OK);
	st = status(c);
	assert_u64(st.committed, 0);
	assert_u64(st.total_committed, 0);
	assert_u64(st.section_allocated, 0);
	assert_u64_le(st.credit, DEFAULT_CREDIT);
	assert_true(st.credit > 0);
	fx_finish(f);
}

/* ---- 8. threads ---- */

#define WORKERS	     4
#define WORKER_SPAN  (4 * MiB)
#define WORKER_ITERS 300

typedef struct worker {
	mb_client *c;
	int id;
	uint8_t *base;
	uint64_t gen[WORKER_SPAN / CHUNK]; /* 0: not committed; else the seed written */
	atomic_int *done;
	uint64_t failures;
	char why[160];
} worker;

static void worker_fail(worker *w, const char *what, uint64_t chunk, HRESULT hr)
{
	if (w->failures++ == 0)
		snprintf(w->why, sizeof(w->why), "%s, chunk %" PRIu64 ", %s", what, chunk,
			 mb_hresult_name(hr));
}

static void *worker_main(void *arg)
{
	worker *w = arg;
	uint64_t rng = 0x2545F4914F6CDD1Dull * (uint64_t)(w->id + 1);
	const uint64_t chunks = WORKER_SPAN / CHUNK;

	for (uint64_t i = 0; i < WORKER_ITERS; i++) {
		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		uint64_t k = rng % chunks;
		uint8_t *p = w->base + k * CHUNK;
		HRESULT hr;
		if (w->gen[k] == 0) {
			if ((hr = commit_at(w->c, p, CHUNK, eTaskCritical)) != S_OK) {
				worker_fail(w, "commit", k, hr);
				continue;
			}
			if (bad_page(p, CHUNK, 0, true) >= 0)
				worker_fail(w, "fresh commit not zero", k, S_OK);
			w->gen[k] = ((uint64_t)w->id << 32) + i + 1;
			fill(p, CHUNK, w->gen[k]);
		} else {
			if (bad_page(p, CHUNK, w->gen[k], false) >= 0)
				worker_fail(w, "data lost", k, S_OK);
			/* Most committed chunks go again; some stay to the end. */
			if (rng % 4 != 0) {
				if ((hr = decommit(w->c, p, CHUNK)) != S_OK)
					worker_fail(w, "decommit", k, hr);
				else
					w->gen[k] = 0;
			}
		}
	}
	atomic_fetch_add(w->done, 1);
	return NULL;
}

typedef struct releaser {
	mb_client *c;
	atomic_int *done;
	uint64_t rounds, failures;
	char why[160];
} releaser;

/* Reserves, commits (locally when credit allows), writes and releases, until the workers are
 * done: its releases and their Syncs interleave with the workers' local commits. */
static void *releaser_main(void *arg)
{
	releaser *r = arg;
	while (atomic_load(r->done) < WORKERS) {
		void *p = NULL;
		HRESULT hr = mb_virtual_alloc(r->c, NULL, MiB, MEM_RESERVE, PAGE_NOACCESS,
					      eTaskCritical, &p);
		if (hr == S_OK) {
			hr = commit_at(r->c, p, 256 * 1024, eTaskCritical);
			if (hr == S_OK) {
				fill(p, 256 * 1024, 9000 + r->rounds);
				if (bad_page(p, 256 * 1024, 9000 + r->rounds, false) >= 0)
					hr = E_UNEXPECTED;
			}
			HRESULT rel = release(r->c, p);
			if (hr == S_OK)
				hr = rel;
		}
		if (hr != S_OK && r->failures++ == 0)
			snprintf(r->why, sizeof(r->why), "round %" PRIu64 ": %s", r->rounds,
				 mb_hresult_name(hr));
		r->rounds++;
		usleep(1000);
	}
	return NULL;
}

static void test_threads_keep_exact_books(void **state)
{
	fx *f = *state;
	fx_start(f, (const char *[]){"--budget", "256M", NULL});
	mb_client *observer = fx_connect(f);
	mb_client *c = fx_connect(f);
	static worker w[WORKERS];
	pthread_t tid[WORKERS + 1];
	atomic_int done = 0;
	releaser r = {.c = c, .done = &done};

	memset(w, 0, sizeof(w));
	for (int i = 0; i < WORKERS; i++) {
		w[i].c = c;
		w[i].id = i;
		w[i].done = &done;
		w[i].base = reserve(c, WORKER_SPAN);
	}
	for (int i = 0; i < WORKERS; i++)
		assert_int_equal(pthread_create(&tid[i], NULL, worker_main, &w[i]), 0);
	assert_int_equal(pthread_create(&tid[WORKERS], NULL, releaser_main, &r), 0);
	for (int i = 0; i <= WORKERS; i++)
		pthread_join(tid[i], NULL);

	uint64_t held = 0;
	for (int i = 0; i < WORKERS; i++) {
		if (w[i].failures > 0)
			fail_msg("worker %d: %" PRIu64 " failures, first: %s", i, w[i].failures,
				 w[i].why);
		for (uint64_t k = 0; k < WORKER_SPAN / CHUNK; k++)
			if (w[i].gen[k] != 0) {
				held += CHUNK;
				assert_pattern(w[i].base + k * CHUNK, CHUNK, w[i].gen[k]);
			}
	}
	if (r.failures > 0)
		fail_msg("releaser: %" PRIu64 " failures, first: %s", r.failures, r.why);
	assert_true(r.rounds > 0);
	assert_true(held > 0);

	mb_session_status st = status(c);
	assert_u64(st.committed, held);
	assert_u64(st.total_committed, held);
	assert_u64(st.reservations, WORKERS);
	assert_u64_ge(st.local_commits, 1);

	for (int i = 0; i < WORKERS; i++)
		assert_hr(release(c, w[i].base), S_OK);
	st = status(c);
	assert_u64(st.committed, 0);
	assert_u64(st.total_committed, 0);
	assert_u64(st.section_allocated, 0);
	assert_u64(status(observer).total_committed, 0);

	/* After disconnect, nothing of it is left: neither commits nor credit. */
	fx_disconnect(f, c);
	assert_waited(alone_and_empty, observer, "the client's session and memory to be gone");
	st = status(observer);
	assert_u64(st.total_credit, 0);
	assert_u64(st.sessions, 1);
	fx_finish(f);
}

int main(int argc, char **argv)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)
	const struct CMUnitTest tests[] = {
	    T(test_local_commits_skip_round_trip),
	    T(test_client_stats_count_round_trips),
	    T(test_reserve_and_release_skip_round_trip),
	    T(test_reported_frees_skip_round_trip),
	    T(test_forged_free_gains_nothing),
	    T(test_credit_off),
	    T(test_credit_taken_back_for_another_process),
	    T(test_credit_per_level),
	    T(test_credit_limit_and_low_pressure),
	    T(test_audit_tolerates_local_commits),
	    T(test_forged_credit_is_bounded),
	    T(test_restart_with_pending_local_commits),
	    T(test_mixed_operations_keep_exact_books),
	    T(test_threads_keep_exact_books),
	};
#undef T

	self_path = argv[0];
	if (argc == 3 && strcmp(argv[1], "--holder") == 0)
		return holder_main(argv[2]);
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
