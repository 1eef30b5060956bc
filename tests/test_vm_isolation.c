/*
 * test_vm_isolation.c: protections are really enforced, forked children cannot use or see a
 * parent's client, clients of one process cannot touch each other's reservations, 100,000
 * reservations stay correct, and a disconnect gives the budget back.
 *
 * One broker for the file. Faults are tested in separate processes: nng cannot be used in a child
 * forked from a process that already used it, so a child that needs its own client re-executes this
 * binary (main() recognises "--mb-child SCENARIO ADDRESS") and the parent checks how it died.
 * Children forked without exec only call the library on the parent's client, which must refuse
 * them.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "membroker.h"

#define PAGE ((size_t)4096)
#define GRAN ((size_t)65536)
#define MiB  ((size_t)1024 * 1024)

/* Exit codes of child scenarios. */
enum {
	CHILD_OK = 0,
	CHILD_CONNECT_FAILED = 10,
	CHILD_ALLOC_FAILED = 11,
	CHILD_CALL_FAILED = 12,
	CHILD_BAD_DATA = 13,
	CHILD_BAD_USAGE = 14,
	CHILD_PIPE_FAILED = 15,
	CHILD_NO_FAULT = 50, /* the access that had to fault did not */
};

static mb_test_broker g_broker;
static mb_client *g_a;

/* ---- assertion helpers ---- */

static void fail_hr(const char *expr, HRESULT got, const HRESULT *want, size_t nwant,
		    const char *file, int line)
{
	char why[256], names[200] = "";
	snprintf(why, sizeof(why), "%s", mb_last_error());
	for (size_t i = 0; i < nwant; i++) {
		size_t len = strlen(names);
		snprintf(names + len, sizeof(names) - len, "%s%s (0x%08" PRIX32 ")",
			 i ? " or " : "", mb_hresult_name(want[i]), (uint32_t)want[i]);
	}
	print_error("%s:%d: %s\n    expected %s, got %s (0x%08" PRIX32 ")%s%s\n", file, line, expr,
		    names, mb_hresult_name(got), (uint32_t)got, why[0] ? ": " : "", why);
	_fail(file, line);
}

/* The result must be one of two values. */
#define assert_hr2(expr, want1, want2)                                                             \
	do {                                                                                       \
		HRESULT got_ = (expr);                                                             \
		HRESULT want_[2] = {(want1), (want2)};                                             \
		if (got_ != want_[0] && got_ != want_[1])                                          \
			fail_hr(#expr, got_, want_, 2, __FILE__, __LINE__);                        \
	} while (0)

#define assert_ptr(got, want)                                                                      \
	do {                                                                                       \
		const void *g_ = (const void *)(got);                                              \
		const void *w_ = (const void *)(want);                                             \
		if (g_ != w_) {                                                                    \
			print_error("%s:%d: %s is %p, expected %p\n", __FILE__, __LINE__, #got,    \
				    g_, w_);                                                       \
			_fail(__FILE__, __LINE__);                                                 \
		}                                                                                  \
	} while (0)

/* A fresh connection; the connect-race regression is covered by test_connect_is_reliable. */
static HRESULT connect_retry(const char *address, mb_client **c)
{
	return mb_connect(address, c);
}

static mb_session_status status_of(mb_client *c)
{
	mb_session_status st;
	memset(&st, 0, sizeof(st));
	assert_hr(mb_get_session_status(c, &st), S_OK);
	return st;
}

static uint8_t *alloc_ok(mb_client *c, void *address, size_t size, DWORD type, DWORD protect)
{
	void *mem = NULL;
	assert_hr(mb_virtual_alloc(c, address, size, type, protect, eTaskCritical, &mem), S_OK);
	assert_non_null(mem);
	return mem;
}

static MEMORY_BASIC_INFORMATION query_of(mb_client *c, const void *address)
{
	MEMORY_BASIC_INFORMATION m;
	SIZE_T written = 0;
	memset(&m, 0xA5, sizeof(m));
	assert_hr(mb_virtual_query(c, address, &m, sizeof(m), &written), S_OK);
	assert_u64(written, sizeof(m));
	return m;
}

static void assert_same_mbi(const MEMORY_BASIC_INFORMATION *got,
			    const MEMORY_BASIC_INFORMATION *want, const char *file, int line)
{
	if (got->BaseAddress != want->BaseAddress || got->AllocationBase != want->AllocationBase ||
	    got->AllocationProtect != want->AllocationProtect ||
	    got->RegionSize != want->RegionSize || got->State != want->State ||
	    (got->State == MEM_COMMIT && got->Protect != want->Protect) ||
	    got->Type != want->Type) {
		print_error(
		    "%s:%d: VirtualQuery changed: { Base %p, AllocBase %p, AllocProtect 0x%x, "
		    "RegionSize 0x%zx, State 0x%x, Protect 0x%x, Type 0x%x }, was { %p, %p, "
		    "0x%x, 0x%zx, 0x%x, 0x%x, 0x%x }\n",
		    file, line, got->BaseAddress, got->AllocationBase,
		    (unsigned)got->AllocationProtect, (size_t)got->RegionSize, (unsigned)got->State,
		    (unsigned)got->Protect, (unsigned)got->Type, want->BaseAddress,
		    want->AllocationBase, (unsigned)want->AllocationProtect,
		    (size_t)want->RegionSize, (unsigned)want->State, (unsigned)want->Protect,
		    (unsigned)want->Type);
		_fail(file, line);
	}
}

static void check_query(mb_client *c, const void *address, const void *base, const void *alloc_base,
			DWORD alloc_protect, size_t size, DWORD state, DWORD protect,
			const char *file, int line)
{
	MEMORY_BASIC_INFORMATION m = query_of(c, address);
	MEMORY_BASIC_INFORMATION w = {
	    .BaseAddress = (void *)base,
	    .AllocationBase = (void *)alloc_base,
	    .AllocationProtect = alloc_protect,
	    .RegionSize = size,
	    .State = state,
	    .Protect = protect,
	    .Type = MEM_PRIVATE,
	};
	assert_same_mbi(&m, &w, file, line);
}
#define CHECK_QUERY(c, addr, base, abase, aprot, size, state, prot)                                \
	check_query(c, addr, base, abase, aprot, size, state, prot, __FILE__, __LINE__)

/* ---- probing memory of this process without dying ---- */

static sigjmp_buf g_probe_jmp;

static void probe_handler(int sig)
{
	siglongjmp(g_probe_jmp, sig);
}

/*
 * Reads n bytes at p and checks that each equals pattern(i). Returns 0 if all matched, the index +
 * 1 of the first mismatch, or -signal if reading faulted.
 */
static long probe_pattern(const volatile uint8_t *p, size_t n, uint8_t (*pattern)(size_t))
{
	struct sigaction sa, old_segv, old_bus;
	volatile long result = 0;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = probe_handler;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, &old_segv);
	sigaction(SIGBUS, &sa, &old_bus);
	int sig = sigsetjmp(g_probe_jmp, 1);
	if (sig == 0) {
		for (size_t i = 0; i < n; i++) {
			if (p[i] != pattern(i)) {
				result = (long)i + 1;
				break;
			}
		}
	} else {
		result = -sig;
	}
	sigaction(SIGSEGV, &old_segv, NULL);
	sigaction(SIGBUS, &old_bus, NULL);
	return result;
}

static uint8_t pattern_a(size_t i)
{
	return (uint8_t)(0xA0 ^ (i * 13) ^ (i >> 9));
}

static void fill(uint8_t *p, size_t n, uint8_t (*pattern)(size_t))
{
	for (size_t i = 0; i < n; i++)
		p[i] = pattern(i);
}

#define assert_pattern(p, n, pattern)                                                              \
	do {                                                                                       \
		long r_ = probe_pattern(p, n, pattern);                                            \
		if (r_ < 0)                                                                        \
			fail_msg("reading %s faulted with signal %ld", #p, -r_);                   \
		if (r_ > 0)                                                                        \
			fail_msg("%s[%ld] changed", #p, r_ - 1);                                   \
	} while (0)

/* ---- children ---- */

/* Makes a forked child die of its own faults (cmocka catches SIGSEGV in the test process). */
static void child_prepare(void)
{
	static const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGALRM};
	struct rlimit no_core = {0, 0};
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		signal(sigs[i], SIG_DFL);
	setrlimit(RLIMIT_CORE, &no_core);
	alarm(60); /* a hung child dies of SIGALRM instead of hanging the test */
}

static const char *describe_status(int st, char *buf, size_t len)
{
	static const char *const codes[] = {
	    [CHILD_CONNECT_FAILED] = "mb_connect failed",
	    [CHILD_ALLOC_FAILED] = "mb_virtual_alloc failed",
	    [CHILD_CALL_FAILED] = "a library call failed",
	    [CHILD_BAD_DATA] = "memory had unexpected contents",
	    [CHILD_BAD_USAGE] = "bad scenario",
	    [CHILD_PIPE_FAILED] = "pipe write failed",
	    [CHILD_NO_FAULT] = "the access did not fault",
	};
	if (st == -1)
		snprintf(buf, len, "fork failed");
	else if (WIFEXITED(st))
		snprintf(buf, len, "exited with code %d (%s)", WEXITSTATUS(st),
			 WEXITSTATUS(st) == 0 ? "no fault"
			 : WEXITSTATUS(st) < (int)(sizeof(codes) / sizeof(codes[0])) &&
				 codes[WEXITSTATUS(st)]
			     ? codes[WEXITSTATUS(st)]
			     : "?");
	else if (WIFSIGNALED(st))
		snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(st),
			 strsignal(WTERMSIG(st)));
	else
		snprintf(buf, len, "wait status 0x%x", st);
	return buf;
}

#define assert_child_signal(status, sig)                                                           \
	do {                                                                                       \
		char b_[128];                                                                      \
		int st_ = (status);                                                                \
		if (!(WIFSIGNALED(st_) && WTERMSIG(st_) == (sig)))                                 \
			fail_msg("child %s, expected death by signal %d (%s)",                     \
				 describe_status(st_, b_, sizeof(b_)), sig, strsignal(sig));       \
	} while (0)

#define assert_child_exit0(status)                                                                 \
	do {                                                                                       \
		char b_[128];                                                                      \
		int st_ = (status);                                                                \
		if (!(WIFEXITED(st_) && WEXITSTATUS(st_) == 0))                                    \
			fail_msg("child %s, expected a clean exit",                                \
				 describe_status(st_, b_, sizeof(b_)));                            \
	} while (0)

/* Scenarios run by a fresh process (this binary re-executed) with its own client. */
static int child_main(const char *scenario, const char *address)
{
	mb_client *c = NULL;
	void *mem = NULL;
	volatile uint8_t *p;
	DWORD old;

	alarm(60);
	/* The fault scenarios expect to die of the signal itself; under AddressSanitizer its own
	 * SEGV handler would turn that into an abort. */
	signal(SIGSEGV, SIG_DFL);
	signal(SIGBUS, SIG_DFL);
	HRESULT hr = strcmp(scenario, "connect_once") == 0 ? mb_connect(address, &c)
							   : connect_retry(address, &c);
	if (hr != S_OK) {
		fprintf(stderr, "child %s: mb_connect(%s): %s (0x%08" PRIX32 "): %s\n", scenario,
			address, mb_hresult_name(hr), (uint32_t)hr, mb_last_error());
		return CHILD_CONNECT_FAILED;
	}
	if (strcmp(scenario, "connect_once") == 0) {
		mb_disconnect(c);
		return CHILD_OK;
	}
	if (strcmp(scenario, "readwrite") == 0) {
		if (mb_virtual_alloc(c, NULL, GRAN, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
				     eTaskCritical, &mem) != S_OK)
			return CHILD_ALLOC_FAILED;
		p = mem;
		for (size_t i = 0; i < GRAN; i++)
			if (p[i] != 0)
				return CHILD_BAD_DATA;
		for (size_t i = 0; i < GRAN; i++)
			p[i] = (uint8_t)i;
		for (size_t i = 0; i < GRAN; i++)
			if (p[i] != (uint8_t)i)
				return CHILD_BAD_DATA;
		mb_disconnect(c);
		return CHILD_OK;
	}
	if (strcmp(scenario, "write_readonly") == 0) {
		if (mb_virtual_alloc(c, NULL, PAGE, MEM_RESERVE | MEM_COMMIT, PAGE_READONLY,
				     eTaskCritical, &mem) != S_OK)
			return CHILD_ALLOC_FAILED;
		p = mem;
		if (p[0] != 0 || p[PAGE - 1] != 0) /* reading is allowed */
			return CHILD_BAD_DATA;
		p[0] = 1;
		return CHILD_NO_FAULT;
	}
	if (strcmp(scenario, "write_execute_read") == 0) {
		if (mb_virtual_alloc(c, NULL, PAGE, MEM_RESERVE | MEM_COMMIT, PAGE_EXECUTE_READ,
				     eTaskCritical, &mem) != S_OK)
			return CHILD_ALLOC_FAILED;
		p = mem;
		if (p[0] != 0)
			return CHILD_BAD_DATA;
		p[PAGE / 2] = 1;
		return CHILD_NO_FAULT;
	}
	if (strcmp(scenario, "read_noaccess") == 0) {
		if (mb_virtual_alloc(c, NULL, PAGE, MEM_RESERVE | MEM_COMMIT, PAGE_NOACCESS,
				     eTaskCritical, &mem) != S_OK)
			return CHILD_ALLOC_FAILED;
		p = mem;
		(void)p[0];
		return CHILD_NO_FAULT;
	}
	if (strcmp(scenario, "write_reserved") == 0) {
		if (mb_virtual_alloc(c, NULL, GRAN, MEM_RESERVE, PAGE_READWRITE, eTaskCritical,
				     &mem) != S_OK)
			return CHILD_ALLOC_FAILED;
		p = (volatile uint8_t *)mem + 3 * PAGE;
		p[0] = 1;
		return CHILD_NO_FAULT;
	}
	if (strcmp(scenario, "read_reserved_next_to_commit") == 0) {
		if (mb_virtual_alloc(c, NULL, GRAN, MEM_RESERVE, PAGE_READWRITE, eTaskCritical,
				     &mem) != S_OK)
			return CHILD_ALLOC_FAILED;
		void *c1 = NULL;
		if (mb_virtual_alloc(c, mem, PAGE, MEM_COMMIT, PAGE_READWRITE, eTaskCritical,
				     &c1) != S_OK)
			return CHILD_ALLOC_FAILED;
		p = mem;
		p[0] = 1;
		p[PAGE - 1] = 1;
		(void)p[PAGE]; /* page 1 is reserved only */
		return CHILD_NO_FAULT;
	}
	if (strcmp(scenario, "write_decommitted") == 0) {
		if (mb_virtual_alloc(c, NULL, GRAN, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
				     eTaskCritical, &mem) != S_OK)
			return CHILD_ALLOC_FAILED;
		p = mem;
		p[2 * PAGE] = 1;
		if (mb_virtual_free(c, (void *)(p + 2 * PAGE), PAGE, MEM_DECOMMIT) != S_OK)
			return CHILD_CALL_FAILED;
		p[PAGE] = 1; /* still committed */
		p[2 * PAGE] = 1;
		return CHILD_NO_FAULT;
	}
	if (strcmp(scenario, "write_after_protect") == 0) {
		if (mb_virtual_alloc(c, NULL, GRAN, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
				     eTaskCritical, &mem) != S_OK)
			return CHILD_ALLOC_FAILED;
		p = mem;
		p[0] = 7;
		if (mb_virtual_protect(c, mem, PAGE, PAGE_READONLY, &old) != S_OK ||
		    old != PAGE_READWRITE)
			return CHILD_CALL_FAILED;
		if (p[0] != 7)
			return CHILD_BAD_DATA;
		p[PAGE] = 1; /* page 1 is still read-write */
		p[0] = 8;
		return CHILD_NO_FAULT;
	}
	if (strcmp(scenario, "read_after_protect_noaccess") == 0) {
		if (mb_virtual_alloc(c, NULL, GRAN, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
				     eTaskCritical, &mem) != S_OK)
			return CHILD_ALLOC_FAILED;
		p = mem;
		p[5 * PAGE] = 7;
		if (mb_virtual_protect(c, (void *)(p + 5 * PAGE), 1, PAGE_NOACCESS, &old) != S_OK)
			return CHILD_CALL_FAILED;
		(void)p[5 * PAGE + 100];
		return CHILD_NO_FAULT;
	}
	if (strcmp(scenario, "write_released") == 0) {
		if (mb_virtual_alloc(c, NULL, GRAN, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
				     eTaskCritical, &mem) != S_OK)
			return CHILD_ALLOC_FAILED;
		p = mem;
		p[0] = 1;
		if (mb_virtual_free(c, mem, 0, MEM_RELEASE) != S_OK)
			return CHILD_CALL_FAILED;
		p[0] = 2;
		return CHILD_NO_FAULT;
	}
	return CHILD_BAD_USAGE;
}

static void exec_self(void *arg)
{
	const char *scenario = arg;
	child_prepare();
	execl("/proc/self/exe", "test_vm_isolation", "--mb-child", scenario, g_broker.address,
	      (char *)NULL);
	_exit(127);
}

static int run_scenario(const char *scenario)
{
	return mb_test_in_child(exec_self, (void *)scenario);
}

/* ---- group setup ---- */

static int group_setup(void **state)
{
	(void)state;
	if (mb_test_broker_start(&g_broker, NULL) != 0)
		return -1;
	HRESULT hr = connect_retry(g_broker.address, &g_a);
	if (hr != S_OK) {
		fprintf(stderr, "mb_connect(%s): 0x%08" PRIX32 " %s\n", g_broker.address,
			(uint32_t)hr, mb_last_error());
		mb_test_broker_stop(&g_broker);
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	mb_disconnect(g_a);
	g_a = NULL;
	mb_test_broker_stop(&g_broker);
	return 0;
}

/* ---- two clients in one process ---- */

static void test_two_clients_cannot_touch_each_other(void **state)
{
	(void)state;
	mb_client *b = NULL;
	assert_hr(connect_retry(g_broker.address, &b), S_OK);

	uint8_t *r = alloc_ok(g_a, NULL, 4 * GRAN, MEM_RESERVE, PAGE_READWRITE);
	alloc_ok(g_a, r, 2 * GRAN, MEM_COMMIT, PAGE_READWRITE);
	fill(r, 2 * GRAN, pattern_a);
	MEMORY_BASIC_INFORMATION q0 = query_of(g_a, r);
	MEMORY_BASIC_INFORMATION q1 = query_of(g_a, r + 2 * GRAN);
	mb_session_status a0 = status_of(g_a);
	mb_session_status b0 = status_of(b);
	assert_u64(b0.committed, 0);
	assert_u64(b0.reservations, 0);

	void *mem;
	DWORD old;
	assert_hr2(mb_virtual_free(b, r, 0, MEM_RELEASE), HOST_E_INVALIDOPERATION,
		   HOST_E_NOT_OWNER);
	assert_hr2(mb_virtual_free(b, r, PAGE, MEM_DECOMMIT), HOST_E_INVALIDOPERATION,
		   HOST_E_NOT_OWNER);
	assert_hr2(mb_virtual_free(b, r, 0, MEM_DECOMMIT), HOST_E_INVALIDOPERATION,
		   HOST_E_NOT_OWNER);
	assert_hr2(mb_virtual_free(b, r + GRAN, 2 * GRAN, MEM_DECOMMIT), HOST_E_INVALIDOPERATION,
		   HOST_E_NOT_OWNER);

	mem = (void *)1;
	assert_hr2(mb_virtual_alloc(b, r + 2 * GRAN, PAGE, MEM_COMMIT, PAGE_READWRITE,
				    eTaskCritical, &mem),
		   HOST_E_NOT_OWNER, MB_E_INVALID_ADDRESS);
	assert_null(mem);
	mem = (void *)1;
	assert_hr2(mb_virtual_alloc(b, r, 2 * GRAN, MEM_COMMIT, PAGE_READONLY, eTaskCritical, &mem),
		   HOST_E_NOT_OWNER, MB_E_INVALID_ADDRESS);
	assert_null(mem);
	mem = (void *)1;
	assert_hr2(mb_virtual_alloc(b, r, PAGE, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
				    eTaskCritical, &mem),
		   MB_E_INVALID_ADDRESS, HOST_E_NOT_OWNER);
	assert_null(mem);
	mem = (void *)1;
	assert_hr2(mb_virtual_alloc(b, r + 3 * GRAN, GRAN, MEM_RESERVE, PAGE_READWRITE,
				    eTaskCritical, &mem),
		   MB_E_INVALID_ADDRESS, HOST_E_NOT_OWNER);
	assert_null(mem);
	mem = (void *)1;
	assert_hr2(mb_virtual_alloc(b, r, GRAN, MEM_RESET, PAGE_READWRITE, eTaskCritical, &mem),
		   HOST_E_NOT_OWNER, MB_E_INVALID_ADDRESS);
	assert_hr2(
	    mb_virtual_alloc(b, r, GRAN, MEM_RESET_UNDO, PAGE_READWRITE, eTaskCritical, &mem),
	    HOST_E_NOT_OWNER, MB_E_INVALID_ADDRESS);

	assert_hr2(mb_virtual_protect(b, r, PAGE, PAGE_NOACCESS, &old), HOST_E_NOT_OWNER,
		   MB_E_INVALID_ADDRESS);
	assert_hr2(mb_virtual_protect(b, r + GRAN, GRAN, PAGE_READONLY, &old), HOST_E_NOT_OWNER,
		   MB_E_INVALID_ADDRESS);
	assert_hr2(mb_virtual_protect(b, r + 2 * GRAN, PAGE, PAGE_READWRITE, &old),
		   HOST_E_NOT_OWNER, MB_E_INVALID_ADDRESS);

	/* A's memory, A's view of it and the broker's figures are unchanged. */
	assert_pattern(r, 2 * GRAN, pattern_a);
	MEMORY_BASIC_INFORMATION m = query_of(g_a, r);
	assert_same_mbi(&m, &q0, __FILE__, __LINE__);
	m = query_of(g_a, r + 2 * GRAN);
	assert_same_mbi(&m, &q1, __FILE__, __LINE__);
	mb_session_status a1 = status_of(g_a);
	mb_session_status b1 = status_of(b);
	assert_u64(a1.committed, a0.committed);
	assert_u64(a1.reserved, a0.reserved);
	assert_u64(a1.reservations, a0.reservations);
	assert_u64(a1.total_committed, a0.total_committed);
	assert_u64(b1.committed, 0);
	assert_u64(b1.reserved, 0);
	assert_u64(b1.reservations, 0);
	/* A can still write its memory and release it. */
	r[0] = 1;
	r[2 * GRAN - 1] = 1;
	assert_hr(mb_virtual_free(g_a, r, 0, MEM_RELEASE), S_OK);
	mb_disconnect(b);
}

static void test_two_clients_see_each_others_memory_as_free(void **state)
{
	(void)state;
	mb_client *b = NULL;
	assert_hr(connect_retry(g_broker.address, &b), S_OK);
	uint8_t *ra = alloc_ok(g_a, NULL, GRAN, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
	uint8_t *rb = alloc_ok(b, NULL, GRAN, MEM_RESERVE, PAGE_READONLY);
	MEMORY_BASIC_INFORMATION m = query_of(b, ra);
	if (m.State != MEM_FREE)
		fail_msg("client B's VirtualQuery of client A's region: State 0x%x, expected "
			 "MEM_FREE",
			 (unsigned)m.State);
	m = query_of(g_a, rb);
	if (m.State != MEM_FREE)
		fail_msg("client A's VirtualQuery of client B's region: State 0x%x, expected "
			 "MEM_FREE",
			 (unsigned)m.State);
	CHECK_QUERY(g_a, ra, ra, ra, PAGE_READWRITE, GRAN, MEM_COMMIT, PAGE_READWRITE);
	CHECK_QUERY(b, rb, rb, rb, PAGE_READONLY, GRAN, MEM_RESERVE, 0xA5A5A5A5);
	assert_hr(mb_virtual_free(g_a, ra, 0, MEM_RELEASE), S_OK);
	assert_hr(mb_virtual_free(b, rb, 0, MEM_RELEASE), S_OK);
	mb_disconnect(b);
}

/* ---- disconnect returns the budget ---- */

typedef struct settle_arg {
	uint64_t total;
	uint32_t sessions;
	mb_session_status last;
	HRESULT hr;
} settle_arg;

/* Other clients of earlier tests are gone: only g_a is connected, and only g_a's commits count. */
static bool only_a_left(void *arg)
{
	settle_arg *s = arg;
	s->hr = mb_get_session_status(g_a, &s->last);
	return s->hr == S_OK && s->last.sessions == 1 &&
	       s->last.total_committed == s->last.committed;
}

static bool total_back(void *arg)
{
	settle_arg *s = arg;
	s->hr = mb_get_session_status(g_a, &s->last);
	return s->hr == S_OK && s->last.total_committed == s->total &&
	       s->last.sessions == s->sessions;
}

static void test_disconnect_returns_budget(void **state)
{
	(void)state;
	settle_arg s;
	memset(&s, 0, sizeof(s));
	if (!mb_test_wait_for(only_a_left, &s, 5000))
		fail_msg("before the test: sessions %u, total_committed %" PRIu64
			 ", this client %" PRIu64 " (hr 0x%08" PRIX32 ")",
			 s.last.sessions, s.last.total_committed, s.last.committed, (uint32_t)s.hr);
	const uint64_t t0 = s.last.total_committed;

	mb_client *c = NULL;
	assert_hr(connect_retry(g_broker.address, &c), S_OK);
	uint8_t *p = alloc_ok(c, NULL, 8 * MiB, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
	memset(p, 0x5C, 8 * MiB);
	uint8_t *q = alloc_ok(c, NULL, 4 * MiB, MEM_RESERVE, PAGE_READWRITE);
	alloc_ok(c, q + MiB, MiB, MEM_COMMIT, PAGE_READWRITE);
	mb_session_status sc = status_of(c);
	assert_u64(sc.committed, 9 * MiB);
	assert_u64(sc.reservations, 2);
	mb_session_status sa = status_of(g_a);
	assert_u64(sa.total_committed, t0 + 9 * MiB);
	assert_u64(sa.sessions, 2);

	mb_disconnect(c);
	s.total = t0;
	s.sessions = 1;
	if (!mb_test_wait_for(total_back, &s, 5000))
		fail_msg("5 s after mb_disconnect: total_committed %" PRIu64 ", expected %" PRIu64
			 "; sessions %u, expected 1 (hr 0x%08" PRIX32 ")",
			 s.last.total_committed, t0, s.last.sessions, (uint32_t)s.hr);
}

/* ---- forked children of a connected parent ---- */

enum { FORK_CALLS = 11 };

static const char *const k_fork_call_names[FORK_CALLS] = {
    "mb_virtual_alloc(reserve+commit)",
    "*mem after failed alloc (S_OK = NULL)",
    "mb_virtual_alloc(commit in parent's region)",
    "mb_virtual_free(MEM_DECOMMIT)",
    "mb_virtual_free(MEM_RELEASE)",
    "mb_virtual_query",
    "mb_virtual_protect",
    "mb_get_memory_load",
    "mb_get_session_status",
    "mb_register_memory_notification",
    "mb_host_memory_manager->VirtualAlloc",
};

typedef struct fork_arg {
	int fd;
	uint8_t *region;
} fork_arg;

static void notification(EMemoryAvailable level, void *context)
{
	(void)level;
	(void)context;
}

static void child_calls(void *argp)
{
	fork_arg *arg = argp;
	HRESULT hr[FORK_CALLS];
	void *mem = (void *)1;
	MEMORY_BASIC_INFORMATION mbi;
	SIZE_T written;
	DWORD old, load;
	SIZE_T avail;
	mb_session_status st;

	child_prepare();
	hr[0] = mb_virtual_alloc(g_a, NULL, GRAN, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
				 eTaskCritical, &mem);
	hr[1] = mem == NULL ? S_OK : E_FAIL;
	hr[2] = mb_virtual_alloc(g_a, arg->region + GRAN, PAGE, MEM_COMMIT, PAGE_READWRITE,
				 eTaskCritical, &mem);
	hr[3] = mb_virtual_free(g_a, arg->region, PAGE, MEM_DECOMMIT);
	hr[4] = mb_virtual_free(g_a, arg->region, 0, MEM_RELEASE);
	hr[5] = mb_virtual_query(g_a, arg->region, &mbi, sizeof(mbi), &written);
	hr[6] = mb_virtual_protect(g_a, arg->region, PAGE, PAGE_READONLY, &old);
	hr[7] = mb_get_memory_load(g_a, &load, &avail);
	hr[8] = mb_get_session_status(g_a, &st);
	hr[9] = mb_register_memory_notification(g_a, notification, NULL);
	IHostMemoryManager *mm = NULL;
	hr[10] = mb_host_memory_manager(g_a, &mm);
	if (hr[10] == S_OK && mm != NULL)
		hr[10] = mm->lpVtbl->VirtualAlloc(mm, NULL, GRAN, MEM_RESERVE, PAGE_READWRITE,
						  eTaskCritical, &mem);
	/* Frees the child's copy only; the parent's connection must survive. */
	mb_disconnect(g_a);
	if (write(arg->fd, hr, sizeof(hr)) != (ssize_t)sizeof(hr))
		_exit(CHILD_PIPE_FAILED);
	_exit(CHILD_OK);
}

static void test_forked_child_calls_return_clrnotavailable(void **state)
{
	(void)state;
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	uint8_t *region = alloc_ok(g_a, NULL, 2 * GRAN, MEM_RESERVE, PAGE_READWRITE);
	alloc_ok(g_a, region, GRAN, MEM_COMMIT, PAGE_READWRITE);
	fill(region, GRAN, pattern_a);
	mb_session_status a0 = status_of(g_a);

	fork_arg arg = {.fd = fds[1], .region = region};
	int st = mb_test_in_child(child_calls, &arg);
	close(fds[1]);
	HRESULT hr[FORK_CALLS];
	ssize_t n = read(fds[0], hr, sizeof(hr));
	close(fds[0]);
	assert_child_exit0(st);
	assert_int_equal(n, (ssize_t)sizeof(hr));
	int bad = 0;
	for (int i = 0; i < FORK_CALLS; i++) {
		HRESULT want = i == 1 ? S_OK : HOST_E_CLRNOTAVAILABLE;
		if (hr[i] != want) {
			print_error("in a forked child, %s returned %s (0x%08" PRIX32
				    "), expected %s (0x%08" PRIX32 ")\n",
				    k_fork_call_names[i], mb_hresult_name(hr[i]), (uint32_t)hr[i],
				    mb_hresult_name(want), (uint32_t)want);
			bad++;
		}
	}
	/* The parent's client works as before and nothing changed. */
	assert_pattern(region, GRAN, pattern_a);
	CHECK_QUERY(g_a, region, region, region, PAGE_READWRITE, GRAN, MEM_COMMIT, PAGE_READWRITE);
	CHECK_QUERY(g_a, region + GRAN, region + GRAN, region, PAGE_READWRITE, GRAN, MEM_RESERVE,
		    0xA5A5A5A5);
	mb_session_status a1 = status_of(g_a);
	assert_u64(a1.committed, a0.committed);
	assert_u64(a1.reservations, a0.reservations);
	alloc_ok(g_a, region + GRAN, PAGE, MEM_COMMIT, PAGE_READWRITE);
	assert_u64(status_of(g_a).committed, a0.committed + PAGE);
	assert_hr(mb_virtual_free(g_a, region, 0, MEM_RELEASE), S_OK);
	assert_int_equal(bad, 0);
}

static void child_connect(void *argp)
{
	fork_arg *arg = argp;
	mb_client *c = NULL;
	HRESULT hr[2];
	child_prepare();
	hr[0] = mb_connect(g_broker.address, &c);
	hr[1] = mb_connect_named(g_broker.address, "forked-child", &c);
	if (write(arg->fd, hr, sizeof(hr)) != (ssize_t)sizeof(hr))
		_exit(CHILD_PIPE_FAILED);
	_exit(CHILD_OK);
}

static void test_forked_child_connect_returns_clrnotavailable(void **state)
{
	(void)state;
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	fork_arg arg = {.fd = fds[1], .region = NULL};
	int st = mb_test_in_child(child_connect, &arg);
	close(fds[1]);
	HRESULT hr[2] = {S_OK, S_OK};
	ssize_t n = read(fds[0], hr, sizeof(hr));
	close(fds[0]);
	assert_child_exit0(st);
	assert_int_equal(n, (ssize_t)sizeof(hr));
	assert_hr(hr[0], HOST_E_CLRNOTAVAILABLE);
	assert_hr(hr[1], HOST_E_CLRNOTAVAILABLE);
}

static void child_read(void *argp)
{
	volatile uint8_t *p = ((fork_arg *)argp)->region;
	child_prepare();
	(void)p[0];
	(void)p[100];
	_exit(CHILD_NO_FAULT);
}

static void child_write(void *argp)
{
	volatile uint8_t *p = ((fork_arg *)argp)->region;
	child_prepare();
	p[0] = 0xEE;
	p[100] = 0xEE;
	_exit(CHILD_NO_FAULT);
}

static void test_forked_child_cannot_read_parent_memory(void **state)
{
	(void)state;
	uint8_t *region = alloc_ok(g_a, NULL, GRAN, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
	fill(region, GRAN, pattern_a);
	fork_arg arg = {.fd = -1, .region = region};
	int st = mb_test_in_child(child_read, &arg);
	assert_pattern(region, GRAN, pattern_a);
	assert_hr(mb_virtual_free(g_a, region, 0, MEM_RELEASE), S_OK);
	assert_child_signal(st, SIGSEGV);
}

static void test_forked_child_cannot_write_parent_memory(void **state)
{
	(void)state;
	uint8_t *region = alloc_ok(g_a, NULL, GRAN, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
	fill(region, GRAN, pattern_a);
	fork_arg arg = {.fd = -1, .region = region};
	int st = mb_test_in_child(child_write, &arg);
	/* Whatever happened in the child, the parent's memory is untouched. */
	assert_pattern(region, GRAN, pattern_a);
	assert_hr(mb_virtual_free(g_a, region, 0, MEM_RELEASE), S_OK);
	assert_child_signal(st, SIGSEGV);
}

/* ---- protections enforced (a fresh process with its own client) ---- */

static void test_fault_control_readwrite_works(void **state)
{
	(void)state;
	assert_child_exit0(run_scenario("readwrite"));
}

static void test_fault_write_to_readonly(void **state)
{
	(void)state;
	assert_child_signal(run_scenario("write_readonly"), SIGSEGV);
}

static void test_fault_write_to_execute_read(void **state)
{
	(void)state;
	assert_child_signal(run_scenario("write_execute_read"), SIGSEGV);
}

static void test_fault_read_noaccess(void **state)
{
	(void)state;
	assert_child_signal(run_scenario("read_noaccess"), SIGSEGV);
}

static void test_fault_write_to_reserved_page(void **state)
{
	(void)state;
	assert_child_signal(run_scenario("write_reserved"), SIGSEGV);
}

static void test_fault_read_reserved_page_next_to_committed(void **state)
{
	(void)state;
	assert_child_signal(run_scenario("read_reserved_next_to_commit"), SIGSEGV);
}

static void test_fault_write_to_decommitted_page(void **state)
{
	(void)state;
	assert_child_signal(run_scenario("write_decommitted"), SIGSEGV);
}

static void test_fault_write_after_protect_readonly(void **state)
{
	(void)state;
	assert_child_signal(run_scenario("write_after_protect"), SIGSEGV);
}

static void test_fault_read_after_protect_noaccess(void **state)
{
	(void)state;
	assert_child_signal(run_scenario("read_after_protect_noaccess"), SIGSEGV);
}

static void test_fault_write_to_released_region(void **state)
{
	(void)state;
	assert_child_signal(run_scenario("write_released"), SIGSEGV);
}

/* ---- 100,000 reservations ---- */

static int cmp_ptr(const void *a, const void *b)
{
	uintptr_t x = (uintptr_t) * (void *const *)a, y = (uintptr_t) * (void *const *)b;
	return x < y ? -1 : x > y;
}

static void test_100k_reservations(void **state)
{
	(void)state;
	enum { N = 100000, EVERY = 1000 };
	mb_client *c = NULL;
	assert_hr(connect_retry(g_broker.address, &c), S_OK);
	void **base = calloc(N, sizeof(void *));
	assert_non_null(base);

	size_t got = 0;
	HRESULT fail_hr_ = S_OK;
	char why[256] = "";
	for (; got < N; got++) {
		void *mem = NULL;
		HRESULT hr = mb_virtual_alloc(c, NULL, GRAN, MEM_RESERVE, PAGE_READWRITE,
					      eTaskCritical, &mem);
		if (hr != S_OK) {
			fail_hr_ = hr;
			snprintf(why, sizeof(why), "%s", mb_last_error());
			break;
		}
		base[got] = mem;
	}
	size_t commits = 0;
	HRESULT commit_hr = S_OK;
	for (size_t i = 0; got == N && i < N; i += EVERY) {
		void *mem = NULL;
		HRESULT hr = mb_virtual_alloc(c, base[i], PAGE, MEM_COMMIT, PAGE_READWRITE,
					      eTaskCritical, &mem);
		if (hr != S_OK) {
			commit_hr = hr;
			break;
		}
		((volatile uint8_t *)base[i])[0] = (uint8_t)(i / EVERY);
		commits++;
	}
	mb_session_status full = status_of(c);

	bool checked = false;
	if (got == N && commits == N / EVERY) {
		/* Every base 64 KiB aligned, no two reservations overlapping. */
		void **sorted = malloc(N * sizeof(void *));
		assert_non_null(sorted);
		memcpy(sorted, base, N * sizeof(void *));
		qsort(sorted, N, sizeof(void *), cmp_ptr);
		size_t misaligned = 0, overlapping = 0;
		for (size_t i = 0; i < N; i++) {
			misaligned += (uintptr_t)sorted[i] % GRAN != 0;
			overlapping +=
			    i > 0 && (uintptr_t)sorted[i] - (uintptr_t)sorted[i - 1] < GRAN;
		}
		free(sorted);
		assert_u64(misaligned, 0);
		assert_u64(overlapping, 0);

		static const size_t probe[] = {0, 1, 999, 1000, 31337, 50000, 50001, 99000, 99999};
		for (size_t k = 0; k < sizeof(probe) / sizeof(probe[0]); k++) {
			uint8_t *b = base[probe[k]];
			if (probe[k] % EVERY == 0) {
				CHECK_QUERY(c, b, b, b, PAGE_READWRITE, PAGE, MEM_COMMIT,
					    PAGE_READWRITE);
				CHECK_QUERY(c, b + PAGE + 17, b + PAGE, b, PAGE_READWRITE,
					    GRAN - PAGE, MEM_RESERVE, 0xA5A5A5A5);
				assert_u64(b[0], (uint8_t)(probe[k] / EVERY));
			} else {
				CHECK_QUERY(c, b + 12345, b + 12288, b, PAGE_READWRITE,
					    GRAN - 12288, MEM_RESERVE, 0xA5A5A5A5);
			}
		}
		checked = true;
	}

	size_t release_failures = 0;
	HRESULT release_hr = S_OK;
	for (size_t i = 0; i < got; i++) {
		HRESULT hr = mb_virtual_free(c, base[i], 0, MEM_RELEASE);
		if (hr != S_OK) {
			release_failures++;
			release_hr = hr;
		}
	}
	mb_session_status end = status_of(c);
	MEMORY_BASIC_INFORMATION m = query_of(c, got ? base[got / 2] : (void *)GRAN);
	void *probe_base = got ? base[got / 2] : NULL;
	free(base);
	mb_disconnect(c);

	/* The clean-up is checked first: it means something even when reserving stopped early. */
	if (release_failures)
		fail_msg("%zu of %zu releases failed, the last with %s (0x%08" PRIX32 ")",
			 release_failures, got, mb_hresult_name(release_hr), (uint32_t)release_hr);
	assert_u64(end.reservations, 0);
	assert_u64(end.committed, 0);
	assert_u64(end.reserved, 0);
	if (m.State != MEM_FREE)
		fail_msg("VirtualQuery(%p) after release: State 0x%x, expected MEM_FREE",
			 probe_base, (unsigned)m.State);
	if (got != N)
		fail_msg(
		    "reservation %zu of %d (64 KiB each, reserve only) failed: %s (0x%08" PRIX32
		    ")%s%s; the %zu before it were released cleanly",
		    got, N, mb_hresult_name(fail_hr_), (uint32_t)fail_hr_, why[0] ? ": " : "", why,
		    got);
	if (commits != N / EVERY)
		fail_msg("commit %zu failed: %s (0x%08" PRIX32 ")", commits,
			 mb_hresult_name(commit_hr), (uint32_t)commit_hr);
	assert_true(checked);
	assert_u64(full.reservations, N);
	assert_u64(full.reserved, (uint64_t)N * GRAN);
	assert_u64(full.committed, (uint64_t)(N / EVERY) * PAGE);
}

/* ---- connecting ---- */

static void test_connect_is_reliable(void **state)
{
	(void)state;
	enum { IN_PROCESS = 200, PROCESSES = 20 };
	int failed = 0;
	char first[256] = "";
	for (int i = 0; i < IN_PROCESS; i++) {
		mb_client *c = NULL;
		HRESULT hr = mb_connect(g_broker.address, &c);
		if (hr != S_OK) {
			if (failed++ == 0)
				snprintf(first, sizeof(first), "%s (0x%08" PRIX32 "): %s",
					 mb_hresult_name(hr), (uint32_t)hr, mb_last_error());
			continue;
		}
		mb_disconnect(c);
	}
	int child_failed = 0;
	for (int i = 0; i < PROCESSES; i++) {
		int st = run_scenario("connect_once");
		child_failed += !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	if (failed || child_failed)
		fail_msg(
		    "mb_connect to an idle broker failed %d of %d times in this process (first: "
		    "%s) and in %d of %d fresh processes; expected S_OK every time",
		    failed, IN_PROCESS, first, child_failed, PROCESSES);
}

int main(int argc, char **argv)
{
	if (argc == 4 && strcmp(argv[1], "--mb-child") == 0)
		return child_main(argv[2], argv[3]);

	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_two_clients_cannot_touch_each_other),
	    cmocka_unit_test(test_two_clients_see_each_others_memory_as_free),
	    cmocka_unit_test(test_disconnect_returns_budget),
	    cmocka_unit_test(test_forked_child_calls_return_clrnotavailable),
	    cmocka_unit_test(test_forked_child_connect_returns_clrnotavailable),
	    cmocka_unit_test(test_forked_child_cannot_read_parent_memory),
	    cmocka_unit_test(test_forked_child_cannot_write_parent_memory),
	    cmocka_unit_test(test_fault_control_readwrite_works),
	    cmocka_unit_test(test_fault_write_to_readonly),
	    cmocka_unit_test(test_fault_write_to_execute_read),
	    cmocka_unit_test(test_fault_read_noaccess),
	    cmocka_unit_test(test_fault_write_to_reserved_page),
	    cmocka_unit_test(test_fault_read_reserved_page_next_to_committed),
	    cmocka_unit_test(test_fault_write_to_decommitted_page),
	    cmocka_unit_test(test_fault_write_after_protect_readonly),
	    cmocka_unit_test(test_fault_read_after_protect_noaccess),
	    cmocka_unit_test(test_fault_write_to_released_region),
	    cmocka_unit_test(test_100k_reservations),
	    cmocka_unit_test(test_connect_is_reliable),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
