/*
 * pybench.c: a real runtime on broker memory. CPython 3.11 (Debian's libpython3.11) embedded
 * twice over the same standard-library workload, in alternating runs:
 *
 *   own     the interpreter on its own allocators (pymalloc over glibc malloc);
 *   broker  pymalloc's arenas from mb_virtual_alloc (MEM_RESERVE | MEM_COMMIT, released with
 *           MEM_RELEASE), as PyObject_SetArenaAllocator lets a host do, and the raw and mem
 *           domains (PyMem_SetAllocator) on the broker's CreateMalloc heap.
 *
 *   mb_pybench [--quick]                 the driver (make bench)
 *   mb_pybench --worker own|broker [URL] one run: prints seconds and the library's counters
 *
 * The workload compiles the first 120 modules of the standard library's own directory, then
 * round-trips 20,000 records through json, matches 50,000 addresses with re and sums 20,000
 * decimal fractions at 50 digits. Only the workload is timed (not the interpreter's start).
 * realloc on the heap uses mb_heap_block_size (an internal function of the library): a block
 * that still fits is kept, else a new one is taken and the old one freed.
 */
#include <Python.h>

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_util.h"
#include "heap.h"
#include "membroker.h"

#define MAX_RUNS 9

static const char workload[] =
    "import os, json, re, decimal\n"
    "d = os.path.dirname(os.__file__)\n"
    "names = sorted(n for n in os.listdir(d) if n.endswith('.py'))[:120]\n"
    "for n in names:\n"
    "    with open(os.path.join(d, n), encoding='utf-8') as f:\n"
    "        compile(f.read(), n, 'exec')\n"
    "data = [{'id': i, 'name': 'x' * (i % 50), 'vals': list(range(i % 20))} for i in "
    "range(20000)]\n"
    "assert json.loads(json.dumps(data)) == data\n"
    "text = ' '.join('user%d@host%d.com' % (i, i) for i in range(50000))\n"
    "assert len(re.findall(r'(\\w+)@(\\w+)\\.com', text)) == 50000\n"
    "decimal.getcontext().prec = 50\n"
    "s = sum(decimal.Decimal(1) / decimal.Decimal(i) for i in range(1, 20000))\n"
    "assert s > 10\n";

static mb_client *client;
static IHostMalloc *heap;
static uint64_t arena_calls;

static void *heap_malloc(void *ctx, size_t n)
{
	void *p;
	(void)ctx;
	return heap->lpVtbl->Alloc(heap, n ? n : 1, eTaskCritical, &p) == S_OK ? p : NULL;
}

static void *heap_calloc(void *ctx, size_t nelem, size_t elsize)
{
	size_t n;
	if (__builtin_mul_overflow(nelem, elsize, &n))
		return NULL;
	void *p = heap_malloc(ctx, n);
	if (p != NULL)
		memset(p, 0, n);
	return p;
}

static void heap_free(void *ctx, void *p)
{
	(void)ctx;
	if (p != NULL && heap->lpVtbl->Free(heap, p) != S_OK)
		abort();
}

static void *heap_realloc(void *ctx, void *p, size_t n)
{
	if (p == NULL)
		return heap_malloc(ctx, n);
	size_t have = mb_heap_block_size(heap, p);
	if (have == 0)
		abort();
	if (n <= have && n >= have / 2)
		return p;
	void *q = heap_malloc(ctx, n);
	if (q == NULL)
		return NULL;
	memcpy(q, p, n < have ? n : have);
	heap_free(ctx, p);
	return q;
}

static void *arena_alloc(void *ctx, size_t size)
{
	void *p;
	(void)ctx;
	arena_calls++;
	return mb_virtual_alloc(client, NULL, size, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
				eTaskCritical, &p) == S_OK
		   ? p
		   : NULL;
}

static void arena_free(void *ctx, void *p, size_t size)
{
	(void)ctx;
	(void)size;
	arena_calls++;
	if (mb_virtual_free(client, p, 0, MEM_RELEASE) != S_OK)
		abort();
}

static int worker(const char *mode, const char *url)
{
	bool broker = strcmp(mode, "broker") == 0;
	mb_client_stats before = {0}, after = {0};

	if (broker) {
		IHostMemoryManager *m;
		for (int i = 0; i < 200 && mb_connect(url, &client) != S_OK; i++)
			usleep(50000);
		if (client == NULL || mb_host_memory_manager(client, &m) != S_OK ||
		    m->lpVtbl->CreateMalloc(m, MALLOC_THREADSAFE, &heap) != S_OK) {
			fprintf(stderr, "pybench: no broker: %s\n", mb_last_error());
			return 1;
		}
		PyMemAllocatorEx a = {NULL, heap_malloc, heap_calloc, heap_realloc, heap_free};
		PyMem_SetAllocator(PYMEM_DOMAIN_RAW, &a);
		PyMem_SetAllocator(PYMEM_DOMAIN_MEM, &a);
		PyObjectArenaAllocator arenas = {NULL, arena_alloc, arena_free};
		PyObject_SetArenaAllocator(&arenas);
	}
	Py_InitializeEx(0);
	if (broker)
		mb_get_client_stats(client, &before);
	uint64_t t0 = bench_now_ns();
	int rv = PyRun_SimpleString(workload);
	uint64_t t1 = bench_now_ns();
	if (broker)
		mb_get_client_stats(client, &after);
	if (rv != 0)
		return 1;
	printf("seconds=%.4f calls=%" PRIu64 " remote=%" PRIu64 " arena_calls=%" PRIu64
	       " alloc=%" PRIu64 "/%" PRIu64 " free=%" PRIu64 "/%" PRIu64 " syncs=%" PRIu64
	       " local_res=%" PRIu64 " local_rel=%" PRIu64 " rt=%" PRIu64 "\n",
	       (double)(t1 - t0) / 1e9,
	       after.alloc_calls + after.free_calls - before.alloc_calls - before.free_calls,
	       after.alloc_remote + after.free_remote - before.alloc_remote - before.free_remote,
	       arena_calls, after.alloc_calls - before.alloc_calls,
	       after.alloc_remote - before.alloc_remote, after.free_calls - before.free_calls,
	       after.free_remote - before.free_remote, after.syncs - before.syncs,
	       after.local_reserves - before.local_reserves,
	       after.local_releases - before.local_releases,
	       after.round_trips - before.round_trips);
	fflush(stdout);
	/* No Py_Finalize: the process ends here, and both modes skip the same teardown. */
	_exit(0);
}

/* One mode of the driver: where the interpreter's memory comes from. */
typedef struct mode {
	const char *name;
	const char *credit; /* the broker's --commit-credit (NULL: its default) */
	bench_broker broker;
	double secs[MAX_RUNS];
	/* Summed over the runs: VirtualAlloc/VirtualFree calls, those that made a round trip,
	 * and of those the Syncs (credit ran out) and the remote frees. */
	uint64_t calls, remote, syncs, free_remote;
} mode;

int main(int argc, char **argv)
{
	bool quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
	int runs = quick ? 1 : MAX_RUNS;
	mode modes[] = {{.name = "own"},
			{.name = "broker", .credit = NULL},
			{.name = "broker", .credit = "64M"}};
	enum { NMODES = sizeof(modes) / sizeof(modes[0]) };
	char self[4096], out[512], load0[64], load1[64];

	if (argc >= 3 && strcmp(argv[1], "--worker") == 0)
		return worker(argv[2], argc > 3 ? argv[3] : NULL);
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0)
		return 1;
	self[n] = '\0';
	bench_loadavg(load0, sizeof(load0));
	for (int m = 1; m < NMODES; m++)
		bench_broker_start(&modes[m].broker, MEMBROKERD_PATH, modes[m].credit);
	fprintf(stderr, "mb_pybench: %d rounds of %d alternating runs\n", runs, NMODES);
	int failures = 0;
	for (int i = 0; i < runs; i++) {
		for (int k = 0; k < NMODES; k++) {
			mode *md = &modes[(i + k) % NMODES]; /* rotate which goes first */
			char *argv_w[] = {self, "--worker", (char *)md->name, md->broker.url, NULL};
			double s;
			unsigned long long c, r, ac, a_calls, a_remote, f_calls, f_remote, syncs;
			if (bench_run(argv_w, out, sizeof(out)) != 0 ||
			    sscanf(out,
				   "seconds=%lf calls=%llu remote=%llu arena_calls=%llu "
				   "alloc=%llu/%llu free=%llu/%llu syncs=%llu",
				   &s, &c, &r, &ac, &a_calls, &a_remote, &f_calls, &f_remote,
				   &syncs) != 9) {
				failures++;
				continue;
			}
			md->secs[i] = s;
			md->calls += c;
			md->remote += r;
			md->syncs += syncs;
			md->free_remote += f_remote;
		}
	}
	for (int m = 1; m < NMODES; m++)
		bench_broker_stop(&modes[m].broker);
	bench_loadavg(load1, sizeof(load1));
	if (failures) {
		printf("mb_pybench: %d run(s) failed\n", failures);
		return 1;
	}
	double med[NMODES], share[NMODES], best[NMODES];
	for (int m = 0; m < NMODES; m++) {
		best[m] = modes[m].secs[0];
		for (int i = 1; i < runs; i++)
			if (modes[m].secs[i] < best[m])
				best[m] = modes[m].secs[i];
		med[m] = bench_median(modes[m].secs, (size_t)runs);
		share[m] = modes[m].calls
			       ? (double)(modes[m].calls - modes[m].remote) / (double)modes[m].calls
			       : 0;
	}
	printf("\nCPython %s embedded: standard-library workload (compile 120 modules, json, re, "
	       "decimal), median of %d rounds of alternating runs\n",
	       PY_VERSION, runs);
	printf("/proc/loadavg at start: %s; at end: %s\n", load0, load1);
	printf("  %-56s %8s   %5s   %8s\n", "", "median", "ratio", "fastest");
	printf("  %-56s %8.3f s          %8.3f s\n", "on its own allocators", med[0], best[0]);
	for (int m = 1; m < NMODES; m++) {
		char what[96];
		snprintf(what, sizeof(what), "arenas + raw/mem domains on broker, credit %s",
			 modes[m].credit ? modes[m].credit : "default (4M)");
		printf("  %-56s %8.3f s  %5.2fx  %8.3f s\n", what, med[m], med[m] / med[0],
		       best[m]);
		printf("    VirtualAlloc/VirtualFree calls: %" PRIu64 ", %" PRIu64
		       " made a round trip (%.1f%% without): %" PRIu64
		       " Syncs (credit ran out), %" PRIu64 " frees\n",
		       modes[m].calls, modes[m].remote, 100 * share[m], modes[m].syncs,
		       modes[m].free_remote);
	}
	printf("\nTargets (issue)\n");
	for (int m = 1; m < NMODES; m++) {
		const char *c = modes[m].credit ? modes[m].credit : "default";
		printf(
		    "  credit %-8s runtime on broker memory <= 1.10x its own time   %6.2fx  %s\n",
		    c, med[m] / med[0], med[m] / med[0] <= 1.10 ? "met" : "NOT MET");
		printf("  credit %-8s >= 99%% of VirtualAlloc/VirtualFree without a round trip "
		       "%5.1f%%  %s\n",
		       c, 100 * share[m], share[m] >= 0.99 ? "met" : "NOT MET");
	}
	return 0;
}
