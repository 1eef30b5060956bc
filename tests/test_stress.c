/*
 * test_stress.c: many client processes hammering one broker with a small budget, some of them
 * killed with SIGKILL while they work. The broker must keep the ledger within the budget at every
 * moment, every client must see only the answers the contract allows and memory that keeps its
 * data, and once every client is gone the broker must be back where it started: nothing committed,
 * one session (the observer), no descriptors or memory left behind.
 *
 * Clients are this binary exec'd again with "--worker ADDRESS SEED MILLISECONDS" (nng aborts in a
 * process forked after its parent used nng, so a worker must be a fresh process). A worker runs a
 * seeded random mix of reserve, commit, decommit, release, protect, MEM_RESET, MEM_RESET_UNDO,
 * VirtualQuery and pattern checks, keeps its own picture of every page, and reports what it found
 * wrong on stderr and through its exit code (see worker_exit below).
 *
 * No timing is asserted: every wait is for a condition, with a generous limit.
 *
 * Environment: MB_STRESS_SECONDS=<n> sets how long the workers run (default 8, 3 under
 * AddressSanitizer); MB_STRESS_SEED=<n> sets the seed (default fixed, printed);
 * MB_STRESS_FILTER=<cmocka filter> runs only the matching tests; MB_STRESS_VERBOSE=1 makes every
 * worker print what it did.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "membroker.h"

#if defined(__SANITIZE_ADDRESS__)
#define STRESS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define STRESS_ASAN 1
#endif
#endif
#ifndef STRESS_ASAN
#define STRESS_ASAN 0
#endif

#define PAGE ((size_t)4096)
#define MiB  ((uint64_t)1 << 20)

#define BUDGET	     (64 * MiB)
#define WORKERS	     32
#define KILLS	     10
#define MAX_SPAWNED  (WORKERS + KILLS + 8)
#define SAMPLE_MS    50
#define SETTLE_MS    (STRESS_ASAN ? 30000 : 10000) /* ledger back to zero after the last client */
#define HANG_MS	     120000 /* a worker still running this long after its end */
#define RSS_SLACK_KB ((STRESS_ASAN ? 256 : 32) * 1024)
#define FD_SLACK     2

static const char *self_path;

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* splitmix64: small, seeded, good enough to pick operations. */
static uint64_t rnd_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static size_t rnd_below(uint64_t *s, size_t n)
{
	return n ? (size_t)(rnd_next(s) % n) : 0;
}

/* ======================================================================================== */
/* Worker                                                                                    */
/* ======================================================================================== */

/* Exit codes of a worker; the first problem seen wins. */
enum worker_exit {
	WX_OK = 0,
	WX_CONNECT = 2,	   /* could not connect */
	WX_COMMIT_HR = 3,  /* a commit answered something other than S_OK/E_OUTOFMEMORY/TIMEOUT */
	WX_OTHER_HR = 4,   /* reserve/decommit/release/protect/reset answered a failure */
	WX_PATTERN = 5,	   /* committed memory lost its data */
	WX_NOT_ZERO = 6,   /* a fresh commit did not read zero */
	WX_LEDGER = 7,	   /* the broker's figures for the session differ from the worker's */
	WX_QUERY = 8,	   /* VirtualQuery disagrees with what the worker did */
	WX_USAGE = 9,	   /* bad arguments */
	WX_NO_MEMORY = 10, /* the worker itself could not allocate its bookkeeping */
};

enum page_state {
	P_RESERVED = 0, /* reserved, not committed */
	P_DATA = 1,	/* committed and holding the pattern of its tag */
	P_RESET = 2,	/* committed, then MEM_RESET: the broker may discard it at any time */
};

enum page_prot { R_RW = 0, R_RO = 1, R_NA = 2 };

static const DWORD prot_value[] = {PAGE_READWRITE, PAGE_READONLY, PAGE_NOACCESS};

#define MAX_RES		 8
#define MAX_RES_PAGES	 1024 /* 4 MiB */
#define MAX_COMMIT_PAGES 512  /* 2 MiB */

typedef struct wres {
	uint8_t *base; /* NULL: slot unused */
	size_t pages;
	uint8_t *state;
	uint8_t *prot;
	uint32_t *tag;
} wres;

typedef struct worker {
	mb_client *c;
	uint64_t rng;
	uint64_t seed;
	uint32_t next_tag;
	int result;
	unsigned long ops, commits_ok, commits_oom, commits_timeout, undo_lost, outages;
	wres res[MAX_RES];
} worker;

static void wfail(worker *w, int code, const char *fmt, ...)
{
	va_list ap;
	char msg[512];

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "stress worker %d (seed %" PRIu64 ", op %lu): %s\n", (int)getpid(), w->seed,
		w->ops, msg);
	if (w->result == WX_OK)
		w->result = code;
}

static uint64_t pattern_word(const uint8_t *page, uint32_t tag, int which)
{
	return ((uint64_t)tag << 32) ^ (uint64_t)(uintptr_t)page ^ ((uint64_t)which << 60);
}

static const size_t pattern_offsets[] = {0, PAGE / 2, PAGE - 8};

static void write_page(uint8_t *page, uint32_t tag)
{
	for (int k = 0; k < 3; k++) {
		uint64_t v = pattern_word(page, tag, k);
		memcpy(page + pattern_offsets[k], &v, sizeof(v));
	}
}

static bool page_has_pattern(const uint8_t *page, uint32_t tag)
{
	for (int k = 0; k < 3; k++) {
		uint64_t v;
		memcpy(&v, page + pattern_offsets[k], sizeof(v));
		if (v != pattern_word(page, tag, k))
			return false;
	}
	return true;
}

static bool page_is_zero(const uint8_t *page)
{
	const uint64_t *p = (const uint64_t *)(const void *)page;
	for (size_t i = 0; i < PAGE / sizeof(*p); i++)
		if (p[i] != 0)
			return false;
	return true;
}

/* Checks the data of the P_DATA pages of [first, first+count) that can be read. P_RESET pages
 * are never read: reading a discarded page would allocate it again in the section. */
static void check_range(worker *w, wres *r, size_t first, size_t count, const char *when)
{
	for (size_t i = first; i < first + count; i++) {
		if (r->state[i] != P_DATA || r->prot[i] == R_NA)
			continue;
		uint8_t *page = r->base + i * PAGE;
		if (!page_has_pattern(page, r->tag[i])) {
			wfail(w, WX_PATTERN,
			      "%s: page %p (page %zu of reservation %p) lost its data", when,
			      (void *)page, i, (void *)r->base);
			return;
		}
	}
}

static void count_pages(const worker *w, uint64_t *data, uint64_t *reset, uint64_t *reserved,
			uint64_t *reservations)
{
	*data = *reset = *reserved = *reservations = 0;
	for (int k = 0; k < MAX_RES; k++) {
		const wres *r = &w->res[k];
		if (r->base == NULL)
			continue;
		(*reservations)++;
		*reserved += r->pages * PAGE;
		for (size_t i = 0; i < r->pages; i++) {
			if (r->state[i] == P_DATA)
				*data += PAGE;
			else if (r->state[i] == P_RESET)
				*reset += PAGE;
		}
	}
}

/*
 * MB_STRESS_OUTAGES=1 (set by the soak, which restarts the broker under its workers): a call may
 * answer HOST_E_CLRNOTAVAILABLE while the broker is away, and must then have changed nothing.
 * The worker counts it and carries on; its later checks prove nothing changed.
 */
static bool outages_allowed;

static bool outage(worker *w, HRESULT hr)
{
	if (!outages_allowed || hr != HOST_E_CLRNOTAVAILABLE)
		return false;
	w->outages++;
	sleep_ms(10);
	return true;
}

static void note_commit_hr(worker *w, HRESULT hr, const char *what)
{
	if (outage(w, hr))
		return;
	if (hr == S_OK)
		w->commits_ok++;
	else if (hr == E_OUTOFMEMORY)
		w->commits_oom++;
	else if (hr == HOST_E_TIMEOUT)
		w->commits_timeout++;
	else
		wfail(w, WX_COMMIT_HR, "%s answered %s (0x%08x): %s", what, mb_hresult_name(hr),
		      (unsigned)hr, mb_last_error());
}

static bool expect_ok(worker *w, HRESULT hr, const char *what)
{
	if (hr == S_OK)
		return true;
	if (outage(w, hr))
		return false;
	wfail(w, WX_OTHER_HR, "%s answered %s (0x%08x): %s", what, mb_hresult_name(hr),
	      (unsigned)hr, mb_last_error());
	return false;
}

static EMemoryCriticalLevel random_level(worker *w)
{
	return (EMemoryCriticalLevel)rnd_below(&w->rng, 3);
}

/* Pages committed by a successful commit of [first, first+count): fresh ones must read zero,
 * earlier ones keep their data (P_RESET ones: their data or zero, if the broker discarded them).
 * All of them are read-write afterwards and get a fresh pattern. */
static void after_commit(worker *w, wres *r, size_t first, size_t count)
{
	for (size_t i = first; i < first + count; i++) {
		uint8_t *page = r->base + i * PAGE;
		if (r->state[i] == P_RESERVED && !page_is_zero(page)) {
			wfail(w, WX_NOT_ZERO, "freshly committed page %p does not read zero",
			      (void *)page);
		} else if (r->state[i] == P_DATA && !page_has_pattern(page, r->tag[i])) {
			wfail(w, WX_PATTERN, "page %p lost its data when committed again",
			      (void *)page);
		} else if (r->state[i] == P_RESET && !page_has_pattern(page, r->tag[i]) &&
			   !page_is_zero(page)) {
			wfail(w, WX_PATTERN,
			      "MEM_RESET page %p committed again is neither its data nor zero",
			      (void *)page);
		}
		r->state[i] = P_DATA;
		r->prot[i] = R_RW;
		r->tag[i] = ++w->next_tag;
		write_page(page, r->tag[i]);
	}
}

static wres *random_res(worker *w)
{
	int start = (int)rnd_below(&w->rng, MAX_RES);
	for (int k = 0; k < MAX_RES; k++) {
		wres *r = &w->res[(start + k) % MAX_RES];
		if (r->base != NULL)
			return r;
	}
	return NULL;
}

/* A random run of pages whose state is in `mask` (bit per state), at most max pages. */
static bool pick_run(worker *w, wres *r, unsigned mask, size_t max, size_t *first, size_t *count)
{
	size_t i = rnd_below(&w->rng, r->pages), n = 0;

	while (i < r->pages && !(mask & (1u << r->state[i])))
		i++;
	if (i == r->pages)
		return false;
	size_t want = 1 + rnd_below(&w->rng, max);
	while (i + n < r->pages && n < want && (mask & (1u << r->state[i + n])))
		n++;
	*first = i;
	*count = n;
	return true;
}

static size_t random_pages(worker *w, size_t max)
{
	/* Half uniform, half mostly small (1 + rand % 2^k, k uniform). */
	if (rnd_below(&w->rng, 2) == 0)
		return 1 + rnd_below(&w->rng, max);
	int bits = 0;
	while (((size_t)1 << bits) < max)
		bits++;
	size_t n = 1 + rnd_below(&w->rng, (size_t)1 << rnd_below(&w->rng, (size_t)bits + 1));
	return n > max ? max : n;
}

static void forget_res(wres *r)
{
	free(r->state);
	free(r->prot);
	free(r->tag);
	memset(r, 0, sizeof(*r));
}

static void op_reserve(worker *w)
{
	wres *r = NULL;
	for (int k = 0; k < MAX_RES && r == NULL; k++)
		if (w->res[k].base == NULL)
			r = &w->res[k];
	if (r == NULL)
		return;
	bool with_commit = rnd_below(&w->rng, 4) == 0;
	size_t pages = random_pages(w, with_commit ? MAX_COMMIT_PAGES : MAX_RES_PAGES);
	void *base = NULL;
	HRESULT hr;

	r->state = calloc(pages, 1);
	r->prot = calloc(pages, 1);
	r->tag = calloc(pages, sizeof(*r->tag));
	if (!r->state || !r->prot || !r->tag) {
		forget_res(r);
		wfail(w, WX_NO_MEMORY, "no memory for the worker's bookkeeping");
		return;
	}
	if (with_commit) {
		hr = mb_virtual_alloc(w->c, NULL, pages * PAGE, MEM_RESERVE | MEM_COMMIT,
				      PAGE_READWRITE, random_level(w), &base);
		note_commit_hr(w, hr, "MEM_RESERVE|MEM_COMMIT");
	} else {
		hr = mb_virtual_alloc(w->c, NULL, pages * PAGE, MEM_RESERVE, PAGE_READWRITE,
				      eTaskCritical, &base);
		expect_ok(w, hr, "MEM_RESERVE");
	}
	if (hr != S_OK || base == NULL) {
		forget_res(r);
		return;
	}
	if (((uintptr_t)base & 0xffff) != 0)
		wfail(w, WX_QUERY, "reservation %p is not 64 KiB aligned", base);
	r->base = base;
	r->pages = pages;
	if (with_commit)
		after_commit(w, r, 0, pages);
}

static void op_release(worker *w)
{
	wres *r = random_res(w);
	if (r == NULL)
		return;
	check_range(w, r, 0, r->pages, "before MEM_RELEASE");
	if (expect_ok(w, mb_virtual_free(w->c, r->base, 0, MEM_RELEASE), "MEM_RELEASE") ||
	    w->result != WX_OK)
		forget_res(r);
}

static void op_commit(worker *w)
{
	wres *r = random_res(w);
	if (r == NULL)
		return;
	size_t first = rnd_below(&w->rng, r->pages);
	size_t count = random_pages(w, MAX_COMMIT_PAGES);
	void *mem = NULL;

	if (count > r->pages - first)
		count = r->pages - first;
	HRESULT hr = mb_virtual_alloc(w->c, r->base + first * PAGE, count * PAGE, MEM_COMMIT,
				      PAGE_READWRITE, random_level(w), &mem);
	note_commit_hr(w, hr, "MEM_COMMIT");
	if (hr != S_OK)
		return;
	if (mem != r->base + first * PAGE)
		wfail(w, WX_QUERY, "MEM_COMMIT of %p returned %p", (void *)(r->base + first * PAGE),
		      mem);
	after_commit(w, r, first, count);
}

static void op_decommit(worker *w)
{
	wres *r = random_res(w);
	size_t first, count;

	if (r == NULL)
		return;
	if (rnd_below(&w->rng, 8) == 0) {
		/* The whole region: size 0 at the base. */
		first = 0;
		count = r->pages;
	} else if (!pick_run(w, r, 1u << P_DATA | 1u << P_RESET, MAX_COMMIT_PAGES, &first,
			     &count)) {
		return;
	}
	check_range(w, r, first, count, "before MEM_DECOMMIT");
	HRESULT hr = mb_virtual_free(w->c, r->base + first * PAGE,
				     count == r->pages ? 0 : count * PAGE, MEM_DECOMMIT);
	if (!expect_ok(w, hr, "MEM_DECOMMIT"))
		return;
	memset(r->state + first, P_RESERVED, count);
	memset(r->prot + first, R_RW, count);
}

static void op_protect(worker *w)
{
	wres *r = random_res(w);
	size_t first, count;
	DWORD old = 0;

	if (r == NULL || !pick_run(w, r, 1u << P_DATA | 1u << P_RESET, 64, &first, &count))
		return;
	int p = (int)rnd_below(&w->rng, 3);
	HRESULT hr =
	    mb_virtual_protect(w->c, r->base + first * PAGE, count * PAGE, prot_value[p], &old);
	if (!expect_ok(w, hr, "VirtualProtect"))
		return;
	if (old != prot_value[r->prot[first]])
		wfail(w, WX_QUERY, "VirtualProtect of %p: old protection 0x%x, expected 0x%x",
		      (void *)(r->base + first * PAGE), (unsigned)old,
		      (unsigned)prot_value[r->prot[first]]);
	memset(r->prot + first, p, count);
	check_range(w, r, first, count, "after VirtualProtect");
}

static void op_reset(worker *w)
{
	wres *r = random_res(w);
	size_t first, count;
	void *mem = NULL;

	if (r == NULL ||
	    !pick_run(w, r, 1u << P_DATA | 1u << P_RESET, MAX_COMMIT_PAGES, &first, &count))
		return;
	check_range(w, r, first, count, "before MEM_RESET");
	HRESULT hr = mb_virtual_alloc(w->c, r->base + first * PAGE, count * PAGE, MEM_RESET,
				      PAGE_READWRITE, eTaskCritical, &mem);
	if (!expect_ok(w, hr, "MEM_RESET"))
		return;
	memset(r->state + first, P_RESET, count);
}

static void op_reset_undo(worker *w)
{
	wres *r = random_res(w);
	size_t first, count;
	void *mem = NULL;

	if (r == NULL || !pick_run(w, r, 1u << P_RESET, MAX_COMMIT_PAGES, &first, &count))
		return;
	HRESULT hr = mb_virtual_alloc(w->c, r->base + first * PAGE, count * PAGE, MEM_RESET_UNDO,
				      PAGE_READWRITE, eTaskCritical, &mem);
	if (hr == S_OK) {
		/* Nothing was discarded: the data is all there. */
		memset(r->state + first, P_DATA, count);
		check_range(w, r, first, count, "after MEM_RESET_UNDO");
		return;
	}
	if (hr != MB_E_INVALID_ADDRESS) {
		expect_ok(w, hr, "MEM_RESET_UNDO");
		return;
	}
	/* The broker discarded some of these pages: their data is gone, and whether they are
	 * charged again depends on the budget at that moment. Decommit them for a defined state. */
	w->undo_lost++;
	hr = mb_virtual_free(w->c, r->base + first * PAGE, count * PAGE, MEM_DECOMMIT);
	if (!expect_ok(w, hr, "MEM_DECOMMIT after a failed MEM_RESET_UNDO"))
		return;
	memset(r->state + first, P_RESERVED, count);
	memset(r->prot + first, R_RW, count);
}

/* Rewrites the data of some read-write pages, and checks a reservation and VirtualQuery. */
static void op_check(worker *w)
{
	wres *r = random_res(w);
	MEMORY_BASIC_INFORMATION mbi;
	SIZE_T written = 0;

	if (r == NULL)
		return;
	check_range(w, r, 0, r->pages, "check");
	size_t i = rnd_below(&w->rng, r->pages);
	HRESULT hr = mb_virtual_query(w->c, r->base + i * PAGE, &mbi, sizeof(mbi), &written);
	if (!expect_ok(w, hr, "VirtualQuery"))
		return;
	DWORD want_state = r->state[i] == P_RESERVED ? MEM_RESERVE : MEM_COMMIT;
	if (mbi.State != want_state || mbi.AllocationBase != r->base ||
	    mbi.BaseAddress != r->base + i * PAGE ||
	    (want_state == MEM_COMMIT && mbi.Protect != prot_value[r->prot[i]]))
		wfail(w, WX_QUERY,
		      "VirtualQuery of page %zu of %p: state 0x%x protect 0x%x base %p, expected "
		      "state 0x%x protect 0x%x",
		      i, (void *)r->base, (unsigned)mbi.State, (unsigned)mbi.Protect,
		      mbi.AllocationBase, (unsigned)want_state,
		      want_state == MEM_COMMIT ? (unsigned)prot_value[r->prot[i]] : 0u);
	size_t first, count;
	if (pick_run(w, r, 1u << P_DATA, 64, &first, &count))
		for (size_t k = first; k < first + count; k++)
			if (r->prot[k] == R_RW) {
				r->tag[k] = ++w->next_tag;
				write_page(r->base + k * PAGE, r->tag[k]);
			}
}

/* The broker's figures for this session against the worker's own. P_RESET pages may or may not
 * be charged (the broker may have discarded them). */
static void check_ledger(worker *w, bool exact)
{
	mb_session_status st;
	uint64_t data, reset, reserved, reservations;
	HRESULT hr = mb_get_session_status(w->c, &st);

	if (!expect_ok(w, hr, "mb_get_session_status"))
		return;
	count_pages(w, &data, &reset, &reserved, &reservations);
	if (st.committed < data || st.committed > data + reset || (exact && reset != 0))
		wfail(w, WX_LEDGER,
		      "the broker says this session has %" PRIu64 " bytes committed, the worker "
		      "holds %" PRIu64 " (+ %" PRIu64 " MEM_RESET)",
		      st.committed, data, reset);
	if (st.reserved != reserved || st.reservations != reservations)
		wfail(w, WX_LEDGER,
		      "the broker says %" PRIu64 " bytes in %" PRIu64 " reservations, the worker "
		      "holds %" PRIu64 " in %" PRIu64,
		      st.reserved, st.reservations, reserved, reservations);
	if (st.offences != 0)
		wfail(w, WX_LEDGER, "the broker counts %u offences for this session", st.offences);
	if (st.total_committed > st.budget)
		wfail(w, WX_LEDGER, "total committed %" PRIu64 " over the budget %" PRIu64,
		      st.total_committed, st.budget);
}

static int worker_main(const char *address, uint64_t seed, long run_ms)
{
	static worker w;
	long long end = now_ms() + run_ms;
	HRESULT hr;

	memset(&w, 0, sizeof(w));
	w.seed = seed;
	w.rng = seed;
	outages_allowed = getenv("MB_STRESS_OUTAGES") != NULL;
	hr = mb_connect_named(address, "stress-worker", &w.c);
	/* Started while the broker restarts: it is back within seconds. */
	for (int tries = 0; hr == HOST_E_CLRNOTAVAILABLE && outages_allowed && tries < 300;
	     tries++) {
		sleep_ms(50);
		hr = mb_connect_named(address, "stress-worker", &w.c);
	}
	if (hr != S_OK) {
		fprintf(stderr, "stress worker %d: connect: %s: %s\n", (int)getpid(),
			mb_hresult_name(hr), mb_last_error());
		return WX_CONNECT;
	}
	while (now_ms() < end) {
		w.ops++;
		size_t op = rnd_below(&w.rng, 100);
		if (op < 10)
			op_reserve(&w);
		else if (op < 13)
			op_release(&w);
		else if (op < 51)
			op_commit(&w);
		else if (op < 66)
			op_decommit(&w);
		else if (op < 74)
			op_protect(&w);
		else if (op < 82)
			op_reset(&w);
		else if (op < 87)
			op_reset_undo(&w);
		else if (op < 98)
			op_check(&w);
		else
			check_ledger(&w, false);
	}

	/* The end: what might have been discarded is decommitted, then the broker's count must be
	 * exactly the worker's. A broker that is away (a restart) is waited for first. */
	for (long long until = now_ms() + 30000; outages_allowed && now_ms() < until;) {
		mb_session_status st;
		if (mb_get_session_status(w.c, &st) != HOST_E_CLRNOTAVAILABLE)
			break;
		sleep_ms(50);
	}
	for (int k = 0; k < MAX_RES; k++) {
		wres *r = &w.res[k];
		if (r->base == NULL)
			continue;
		check_range(&w, r, 0, r->pages, "at the end");
		for (size_t i = 0; i < r->pages; i++) {
			if (r->state[i] != P_RESET)
				continue;
			size_t j = i;
			while (j < r->pages && r->state[j] == P_RESET)
				j++;
			hr = mb_virtual_free(w.c, r->base + i * PAGE, (j - i) * PAGE, MEM_DECOMMIT);
			expect_ok(&w, hr, "final MEM_DECOMMIT");
			memset(r->state + i, P_RESERVED, j - i);
			i = j;
		}
	}
	check_ledger(&w, true);
	for (int k = 0; k < MAX_RES; k++)
		if (w.res[k].base != NULL)
			forget_res(&w.res[k]);
	mb_disconnect(w.c);
	if (getenv("MB_STRESS_VERBOSE"))
		fprintf(
		    stderr,
		    "stress worker %d: %lu ops, commits %lu ok, %lu refused, %lu timed out, %lu "
		    "undo lost, %lu answered during an outage\n",
		    (int)getpid(), w.ops, w.commits_ok, w.commits_oom, w.commits_timeout,
		    w.undo_lost, w.outages);
	return w.result;
}

/* ======================================================================================== */
/* Test process                                                                              */
/* ======================================================================================== */

typedef struct child {
	pid_t pid;
	bool killed; /* by the test */
	bool done;
	int status;
} child;

typedef struct run {
	mb_test_broker b;
	mb_client *observer;
	uint64_t rng;
	child kids[MAX_SPAWNED];
	int nkids;
	int failures;
} run;

static void failure(run *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "stress: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	r->failures++;
}

static long stress_ms(void)
{
	const char *env = getenv("MB_STRESS_SECONDS");
	double s = env ? strtod(env, NULL) : 0;
	if (s <= 0 || s > 600)
		s = STRESS_ASAN ? 3 : 8;
	return (long)(s * 1000);
}

static uint64_t stress_seed(void)
{
	const char *env = getenv("MB_STRESS_SEED");
	return env ? strtoull(env, NULL, 0) : 0x5eed2024u;
}

static pid_t spawn_worker(run *r, long ms)
{
	char seed[32], msec[32];
	pid_t pid;

	if (r->nkids == MAX_SPAWNED)
		return -1;
	snprintf(seed, sizeof(seed), "%" PRIu64, rnd_next(&r->rng));
	snprintf(msec, sizeof(msec), "%ld", ms);
	pid = fork();
	if (pid < 0) {
		failure(r, "fork: %s", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		execl(self_path, self_path, "--worker", r->b.address, seed, msec, (char *)NULL);
		_exit(127);
	}
	r->kids[r->nkids++] = (child){.pid = pid};
	return pid;
}

static int alive(const run *r)
{
	int n = 0;
	for (int i = 0; i < r->nkids; i++)
		n += !r->kids[i].done;
	return n;
}

/* Reaps finished workers (WNOHANG unless block) and judges how they ended. */
static void reap(run *r, bool block)
{
	for (int i = 0; i < r->nkids; i++) {
		child *k = &r->kids[i];
		if (k->done)
			continue;
		pid_t got = waitpid(k->pid, &k->status, block ? 0 : WNOHANG);
		if (got != k->pid)
			continue;
		k->done = true;
		if (k->killed && WIFSIGNALED(k->status) && WTERMSIG(k->status) == SIGKILL)
			continue;
		if (WIFEXITED(k->status) && WEXITSTATUS(k->status) == 0)
			continue;
		if (WIFEXITED(k->status))
			failure(r, "worker %d exited with %d", (int)k->pid, WEXITSTATUS(k->status));
		else
			failure(r, "worker %d ended by signal %d", (int)k->pid,
				WIFSIGNALED(k->status) ? WTERMSIG(k->status) : -1);
	}
}

static void kill_child(run *r, child *k)
{
	(void)r;
	if (!k->done && !k->killed) {
		kill(k->pid, SIGKILL);
		k->killed = true;
	}
}

static bool broker_alive(run *r)
{
	siginfo_t info;

	memset(&info, 0, sizeof(info));
	if (waitid(P_PID, (id_t)r->b.pid, &info, WEXITED | WNOHANG | WNOWAIT) != 0)
		return false;
	return info.si_pid == 0;
}

static int broker_fds(pid_t pid)
{
	char path[64];
	struct dirent *e;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	DIR *d = opendir(path);
	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static long broker_rss_kb(pid_t pid)
{
	char path[64], line[256];
	long kb = -1;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static void show_log(const run *r)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd),
		 "echo '--- broker log (tail) ---' >&2; grep -v 'notice: \\|reclaimed' '%s' | "
		 "tail -n 80 >&2",
		 r->b.log);
	if (system(cmd) != 0)
		fprintf(stderr, "stress: cannot show the broker log %s\n", r->b.log);
}

typedef struct settle {
	run *r;
	mb_session_status st;
	HRESULT hr;
} settle;

static bool all_returned(void *arg)
{
	settle *s = arg;
	s->hr = mb_get_session_status(s->r->observer, &s->st);
	return s->hr == S_OK && s->st.total_committed == 0 && s->st.sessions == 1 &&
	       s->st.waiters == 0;
}

typedef struct fds_at {
	pid_t pid;
	int limit;
	int last;
} fds_at;

static bool fds_back(void *arg)
{
	fds_at *f = arg;
	f->last = broker_fds(f->pid);
	return f->last >= 0 && f->last <= f->limit;
}

static void start_run(run *r, uint64_t seed)
{
	memset(r, 0, sizeof(*r));
	r->rng = seed;
	assert_int_equal(mb_test_broker_start(&r->b, (const char *[]){"--budget", "64M", "--waits",
								      "0,20,100", NULL}),
			 0);
	assert_int_equal(mb_connect_named(r->b.address, "stress-observer", &r->observer), S_OK);
}

/* After every worker ended: nothing committed, only the observer left, nobody waiting. */
static void check_settled(run *r)
{
	settle s = {.r = r};

	if (!mb_test_wait_for(all_returned, &s, SETTLE_MS))
		failure(r,
			"after every client ended: %s, total committed %" PRIu64 ", sessions %u, "
			"waiters %u",
			mb_hresult_name(s.hr), s.st.total_committed, s.st.sessions, s.st.waiters);
}

static bool broker_exited(void *arg)
{
	return !broker_alive(arg);
}

static void finish_run(run *r)
{
	for (int i = 0; i < r->nkids; i++)
		kill_child(r, &r->kids[i]);
	reap(r, true);
	mb_disconnect(r->observer);
	/* An orderly stop, watched: a broker that does not stop is a finding, shown with its log
	 * and its threads before the harness kills it. */
	kill(r->b.pid, SIGTERM);
	if (!mb_test_wait_for(broker_exited, r, 30000)) {
		char cmd[300];
		failure(r, "the broker did not stop within 30 s of SIGTERM; its threads:");
		snprintf(cmd, sizeof(cmd),
			 "gdb -batch -ex 'thread apply all bt' %s %d 2>/dev/null | grep -E "
			 "'^(Thread|#)' >&2",
			 MEMBROKERD_PATH, (int)r->b.pid);
		if (system(cmd) != 0)
			fprintf(stderr, "stress: no backtrace (gdb missing or refused)\n");
	}
	siginfo_t info;
	memset(&info, 0, sizeof(info));
	if (waitid(P_PID, (id_t)r->b.pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
	    info.si_pid == r->b.pid && (info.si_code != CLD_EXITED || info.si_status != 0))
		failure(r, "the broker ended with %s %d",
			info.si_code == CLD_EXITED ? "exit code" : "signal", info.si_status);
	if (r->failures > 0)
		show_log(r);
	int status = mb_test_broker_stop(&r->b);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		failure(r, "the broker ended with status 0x%x", (unsigned)status);
}

/*
 * 32 workers for a few seconds, 10 of them killed at random moments and replaced; the observer
 * samples the ledger every 50 ms. Afterwards the broker must be back at its starting point.
 */
static void test_stress_workers_and_kills(void **state)
{
	static run r;
	uint64_t seed = stress_seed();
	long run_ms = stress_ms();
	long long kill_at[KILLS];
	mb_session_status st;
	unsigned long samples = 0, sample_errors = 0;
	uint64_t max_total = 0;
	uint32_t max_waiters = 0;
	int kills = 0, budget_violations = 0;

	(void)state;
	fprintf(stderr, "stress: seed 0x%" PRIx64 ", %d workers for %ld ms, %d kills%s\n", seed,
		WORKERS, run_ms, KILLS, STRESS_ASAN ? " (AddressSanitizer)" : "");
	start_run(&r, seed);

	/* The broker at rest, with the observer connected. */
	settle s0 = {.r = &r};
	assert_true(mb_test_wait_for(all_returned, &s0, SETTLE_MS));
	int fds0 = broker_fds(r.b.pid);
	long rss0 = broker_rss_kb(r.b.pid);
	assert_true(fds0 > 0);
	assert_true(rss0 > 0);

	long long t0 = now_ms(), end = t0 + run_ms;
	for (int i = 0; i < WORKERS; i++)
		spawn_worker(&r, run_ms);
	for (int i = 0; i < KILLS; i++)
		kill_at[i] =
		    t0 + run_ms / 10 + (long long)rnd_below(&r.rng, (size_t)run_ms * 3 / 4);
	for (int i = 1; i < KILLS; i++) /* sort */
		for (int j = i; j > 0 && kill_at[j] < kill_at[j - 1]; j--) {
			long long t = kill_at[j];
			kill_at[j] = kill_at[j - 1];
			kill_at[j - 1] = t;
		}

	for (;;) {
		long long now = now_ms();
		reap(&r, false);
		if (alive(&r) == 0 && now >= end)
			break;
		if (!broker_alive(&r)) {
			failure(&r, "the broker died during the run");
			break;
		}
		if (now > end + HANG_MS) {
			failure(&r, "%d workers still running %d s after their end; killing them",
				alive(&r), HANG_MS / 1000);
			break;
		}
		while (kills < KILLS && now >= kill_at[kills]) {
			int live[MAX_SPAWNED], n = 0;
			for (int i = 0; i < r.nkids; i++)
				if (!r.kids[i].done && !r.kids[i].killed)
					live[n++] = i;
			kills++;
			if (n == 0)
				continue;
			kill_child(&r, &r.kids[live[rnd_below(&r.rng, (size_t)n)]]);
			if (end - now > 200)
				spawn_worker(&r, (long)(end - now));
		}
		HRESULT hr = mb_get_session_status(r.observer, &st);
		if (hr != S_OK) {
			if (sample_errors++ < 5)
				fprintf(stderr, "stress: observer sample: %s: %s\n",
					mb_hresult_name(hr), mb_last_error());
		} else {
			samples++;
			if (st.total_committed > max_total)
				max_total = st.total_committed;
			if (st.waiters > max_waiters)
				max_waiters = st.waiters;
			if (st.total_committed > st.budget && budget_violations++ < 5)
				failure(&r,
					"total committed %" PRIu64 " over the budget %" PRIu64
					" (sessions %u, waiters %u)",
					st.total_committed, st.budget, st.sessions, st.waiters);
			if (st.budget != BUDGET)
				failure(&r, "the budget reads %" PRIu64, st.budget);
		}
		sleep_ms(SAMPLE_MS);
	}
	fprintf(stderr,
		"stress: %d workers started, %d killed; %lu samples (%lu failed), peak %" PRIu64
		" KiB committed, peak %u waiters\n",
		r.nkids, kills, samples, sample_errors, max_total >> 10, max_waiters);
	for (int i = 0; i < r.nkids; i++)
		kill_child(&r, &r.kids[i]); /* only those still running after HANG_MS */
	reap(&r, true);
	if (sample_errors > 0)
		failure(&r, "%lu observer samples failed", sample_errors);
	if (samples == 0)
		failure(&r, "no observer sample succeeded");

	check_settled(&r);

	/* Descriptors and memory: back to (about) where the broker started. */
	fds_at f = {.pid = r.b.pid, .limit = fds0 + FD_SLACK};
	if (broker_alive(&r) && !mb_test_wait_for(fds_back, &f, SETTLE_MS)) {
		char cmd[200];
		failure(&r, "the broker holds %d descriptors, %d before the workers:", f.last,
			fds0);
		snprintf(cmd, sizeof(cmd), "ls -l /proc/%d/fd | sort -k11 | uniq -c -f10 >&2",
			 (int)r.b.pid);
		if (system(cmd) != 0)
			fprintf(stderr, "stress: cannot list the descriptors\n");
	}
	long rss1 = broker_rss_kb(r.b.pid);
	fprintf(stderr, "stress: broker fds %d -> %d, VmRSS %ld -> %ld KiB\n", fds0,
		broker_fds(r.b.pid), rss0, rss1);
	if (rss1 < 0 || rss1 > rss0 + RSS_SLACK_KB)
		failure(&r, "broker VmRSS %ld KiB, %ld KiB before the workers", rss1, rss0);

	int failures = r.failures;
	finish_run(&r);
	assert_int_equal(failures, 0);
	assert_int_equal(r.failures, 0);
}

typedef struct sessions_at {
	mb_client *observer;
	uint32_t want;
} sessions_at;

static bool busy(void *arg)
{
	sessions_at *s = arg;
	mb_session_status st;
	return mb_get_session_status(s->observer, &st) == S_OK && st.sessions >= s->want &&
	       st.total_committed > 0;
}

/* Workers killed all at once, twice, in the middle of their work: every byte comes back. */
static void test_stress_kill_all_at_once(void **state)
{
	static run r;
	const int n = WORKERS / 2;

	(void)state;
	start_run(&r, stress_seed() ^ 0xb0b);
	for (int round = 0; round < 2; round++) {
		int first = r.nkids;
		for (int i = 0; i < n; i++)
			spawn_worker(&r, 600000); /* never ends by itself */
		sessions_at s = {.observer = r.observer, .want = (uint32_t)n + 1};
		if (!mb_test_wait_for(busy, &s, 60000))
			failure(&r, "round %d: the workers did not all connect and commit", round);
		sleep_ms(300); /* let them get into the thick of it; nothing depends on this */
		for (int i = first; i < r.nkids; i++)
			kill_child(&r, &r.kids[i]);
		reap(&r, true);
		check_settled(&r);
	}
	int failures = r.failures;
	finish_run(&r);
	assert_int_equal(failures, 0);
	assert_int_equal(r.failures, 0);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_stress_workers_and_kills),
	    cmocka_unit_test(test_stress_kill_all_at_once),
	};

	self_path = argv[0];
	signal(SIGPIPE, SIG_IGN);
	if (getenv("MB_STRESS_FILTER") != NULL)
		cmocka_set_test_filter(getenv("MB_STRESS_FILTER"));
	if (argc >= 2 && strcmp(argv[1], "--worker") == 0) {
		if (argc != 5)
			return WX_USAGE;
		return worker_main(argv[2], strtoull(argv[3], NULL, 10), strtol(argv[4], NULL, 10));
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
