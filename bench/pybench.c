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
	printf("seconds=%.4f calls=%" PRIu64 " remote=%" PRIu64 " arena_calls=%" PRIu64 "\n",
	       (double)(t1 - t0) / 1e9,
	       after.alloc_calls + after.free_calls - before.alloc_calls - before.free_calls,
	       after.alloc_remote + after.free_remote - before.alloc_remote - before.free_remote,
	       arena_calls);
	fflush(stdout);
	/* No Py_Finalize: the process ends here, and both modes skip the same teardown. */
	_exit(0);
}

int main(int argc, char **argv)
{
	bool quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
	int runs = quick ? 1 : 5;
	double own[9], brk[9];
	uint64_t calls = 0, remote = 0;
	char self[4096], out[512], load0[64], load1[64];
	bench_broker b;

	if (argc >= 3 && strcmp(argv[1], "--worker") == 0)
		return worker(argv[2], argc > 3 ? argv[3] : NULL);
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0)
		return 1;
	self[n] = '\0';
	bench_loadavg(load0, sizeof(load0));
	bench_broker_start(&b, MEMBROKERD_PATH);
	fprintf(stderr, "mb_pybench: broker at %s; %d alternating runs\n", b.url, runs);
	int failures = 0;
	for (int i = 0; i < runs; i++) {
		for (int k = 0; k < 2; k++) {
			bool on_broker = (i + k) % 2 == 1; /* alternate which goes first */
			char *argv_w[] = {self, "--worker", on_broker ? "broker" : "own", b.url,
					  NULL};
			double s;
			unsigned long long c, r, ac;
			if (bench_run(argv_w, out, sizeof(out)) != 0 ||
			    sscanf(out, "seconds=%lf calls=%llu remote=%llu arena_calls=%llu", &s,
				   &c, &r, &ac) != 4) {
				failures++;
				continue;
			}
			if (on_broker) {
				brk[i] = s;
				calls += c;
				remote += r;
			} else {
				own[i] = s;
			}
		}
	}
	bench_broker_stop(&b);
	bench_loadavg(load1, sizeof(load1));
	if (failures) {
		printf("mb_pybench: %d run(s) failed\n", failures);
		return 1;
	}
	double mo = bench_median(own, (size_t)runs), mb = bench_median(brk, (size_t)runs);
	printf("\nCPython %s embedded: standard-library workload (compile 120 modules, json, re, "
	       "decimal), median of %d alternating runs\n",
	       PY_VERSION, runs);
	printf("/proc/loadavg at start: %s; at end: %s\n", load0, load1);
	printf("  on its own allocators             %8.3f s\n", mo);
	printf("  arenas + raw/mem domains on broker %7.3f s   %.2fx\n", mb, mb / mo);
	printf("  VirtualAlloc/VirtualFree calls: %" PRIu64 " in %d runs, %" PRIu64
	       " made a round trip (%.1f%% without)\n",
	       calls, runs, remote, calls ? 100.0 * (double)(calls - remote) / (double)calls : 0);
	printf("\nTargets (issue)\n");
	printf("  runtime on broker memory <= 1.10x its own time    %6.2fx  %s\n", mb / mo,
	       mb / mo <= 1.10 ? "met" : "NOT MET");
	double share = calls ? (double)(calls - remote) / (double)calls : 0;
	printf("  >= 99%% of VirtualAlloc/VirtualFree without a round trip %5.1f%%  %s\n",
	       100 * share, share >= 0.99 ? "met" : "NOT MET");
	return 0;
}
