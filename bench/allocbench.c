/*
 * allocbench.c: the CreateMalloc heap (IHostMalloc over the broker) against glibc malloc and
 * mimalloc, at 1, 2 and 4 threads, small sizes (8-264 bytes) and mixed sizes (one request in 64
 * between 264 bytes and 1 MiB).
 *
 *   mb_allocbench [--quick]                       the driver (make bench)
 *   mb_allocbench --worker ALLOC LOAD THREADS MS [URL]
 *
 * Each measurement is a process of its own (a worker), so the allocators never share a process:
 * mimalloc's shared library replaces malloc in any process that links it, so its worker is a
 * second binary, mb_allocbench_mimalloc, built from this file with MB_WITH_MIMALLOC. The driver
 * starts a membrokerd of its own and runs every (allocator, load, threads) cell once per round,
 * in turn, for several rounds, so drift in machine load hits all of them alike; it prints the
 * median of each cell and the ratios the targets are about.
 *
 * A thread of a worker keeps 1024 slots; each operation picks a slot at random and frees its
 * block if it holds one, else allocates one and writes 16 bytes at both its ends. Operations per
 * second count allocations and frees, summed over the threads. Every worker first runs the same
 * load for WARM_MS, not counted, then all its threads start the measured window together: what
 * is measured is the steady state, not the first reservation of a fresh heap (a round trip that
 * on a loaded machine can wait tens of milliseconds for the broker to be scheduled).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_util.h"

#ifdef MB_WITH_MIMALLOC
#include <mimalloc.h>
#else
#include "membroker.h"
#endif

#define SLOTS	    1024
#define MAX_THREADS 4
#define WARM_MS	    150

typedef enum { LOAD_SMALL, LOAD_MIXED } load_kind;

typedef struct alloc_face {
	void *(*alloc)(void *ctx, size_t n);
	void (*free)(void *ctx, void *p);
	void *ctx;
} alloc_face;

typedef struct thread_arg {
	const alloc_face *face;
	load_kind load;
	uint64_t seed, ops, warm_end_ns, end_ns;
	int failed;
	pthread_barrier_t *start; /* before the warm-up; then twice around setting end_ns */
} thread_arg;

static uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

static size_t next_size(load_kind load, uint64_t *rng)
{
	uint64_t r = xorshift(rng);
	if (load == LOAD_MIXED && (r & 63) == 0)
		return 264 + (size_t)((r >> 6) % ((1u << 20) - 264 + 1));
	return 8 + (size_t)((r >> 6) % 257);
}

/* Runs the load on slot until end_ns; returns the operations done, 0 when an allocation failed. */
static uint64_t run_until(thread_arg *a, void **slot, uint64_t *rng, uint64_t end_ns)
{
	static const char pattern[16] = "membroker-bench";
	uint64_t ops = 0;

	for (;;) {
		for (int k = 0; k < 1024; k++) {
			size_t i = (size_t)(xorshift(rng) % SLOTS);
			if (slot[i] != NULL) {
				a->face->free(a->face->ctx, slot[i]);
				slot[i] = NULL;
			} else {
				size_t n = next_size(a->load, rng);
				char *b = a->face->alloc(a->face->ctx, n);
				if (b == NULL) {
					a->failed = 1;
					return 0;
				}
				memcpy(b, pattern, 8);
				memcpy(b + n - 8, pattern + 8, 8);
				slot[i] = b;
			}
			ops++;
		}
		if (bench_now_ns() >= end_ns)
			return ops;
	}
}

static void *worker_thread(void *p)
{
	thread_arg *a = p;
	void *slot[SLOTS] = {0};
	uint64_t rng = a->seed;

	pthread_barrier_wait(a->start);
	run_until(a, slot, &rng, a->warm_end_ns); /* not counted */
	pthread_barrier_wait(a->start);
	pthread_barrier_wait(a->start); /* the main thread has set end_ns */
	if (!a->failed)
		a->ops = run_until(a, slot, &rng, a->end_ns);
	for (size_t i = 0; i < SLOTS; i++)
		if (slot[i] != NULL)
			a->face->free(a->face->ctx, slot[i]);
	return NULL;
}

/* Runs the load on `threads` threads for ms milliseconds; returns operations per second, and
 * per second of the process's CPU time in *per_cpu. */
static double run_load(const alloc_face *face, load_kind load, int threads, long ms, bool *failed,
		       double *per_cpu)
{
	pthread_t t[MAX_THREADS];
	thread_arg a[MAX_THREADS];
	pthread_barrier_t start;

	pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
	uint64_t warm_end = bench_now_ns() + (uint64_t)WARM_MS * 1000000u;
	for (int i = 0; i < threads; i++) {
		a[i] = (thread_arg){.face = face,
				    .load = load,
				    .seed = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1),
				    .warm_end_ns = warm_end,
				    .start = &start};
		pthread_create(&t[i], NULL, worker_thread, &a[i]);
	}
	pthread_barrier_wait(&start);
	pthread_barrier_wait(&start); /* every thread has warmed up */
	uint64_t t0 = bench_now_ns(), c0 = bench_cpu_ns();
	for (int i = 0; i < threads; i++)
		a[i].end_ns = t0 + (uint64_t)ms * 1000000u;
	pthread_barrier_wait(&start);
	uint64_t ops = 0;
	for (int i = 0; i < threads; i++) {
		pthread_join(t[i], NULL);
		ops += a[i].ops;
		*failed |= a[i].failed != 0;
	}
	uint64_t t1 = bench_now_ns(), c1 = bench_cpu_ns();
	pthread_barrier_destroy(&start);
	*per_cpu = c1 > c0 ? (double)ops / ((double)(c1 - c0) / 1e9) : 0;
	return (double)ops / ((double)(t1 - t0) / 1e9);
}

#ifdef MB_WITH_MIMALLOC
static void *mi_face_alloc(void *ctx, size_t n)
{
	(void)ctx;
	return mi_malloc(n);
}

static void mi_face_free(void *ctx, void *p)
{
	(void)ctx;
	mi_free(p);
}
#else
static void *glibc_alloc(void *ctx, size_t n)
{
	(void)ctx;
	return malloc(n);
}

static void glibc_free(void *ctx, void *p)
{
	(void)ctx;
	free(p);
}

static void *heap_alloc(void *ctx, size_t n)
{
	void *p;
	return ((IHostMalloc *)ctx)->lpVtbl->Alloc((IHostMalloc *)ctx, n, eTaskCritical, &p) == S_OK
		   ? p
		   : NULL;
}

static void heap_free(void *ctx, void *p)
{
	if (((IHostMalloc *)ctx)->lpVtbl->Free((IHostMalloc *)ctx, p) != S_OK)
		abort();
}
#endif

static int worker_main(char **argv)
{
	const char *alloc = argv[2];
	load_kind load = strcmp(argv[3], "mixed") == 0 ? LOAD_MIXED : LOAD_SMALL;
	int threads = atoi(argv[4]);
	long ms = atol(argv[5]);
	bool failed = false;
	double ops, cpu = 0;

	if (threads < 1 || threads > MAX_THREADS || ms <= 0)
		return 2;
#ifdef MB_WITH_MIMALLOC
	alloc_face face = {mi_face_alloc, mi_face_free, NULL};
	if (strcmp(alloc, "mimalloc") != 0)
		return 2;
	ops = run_load(&face, load, threads, ms, &failed, &cpu);
	printf("ops=%.0f cpu_ops=%.0f virtual_calls=0 virtual_round_trips=0\n", ops, cpu);
#else
	if (strcmp(alloc, "glibc") == 0) {
		alloc_face face = {glibc_alloc, glibc_free, NULL};
		ops = run_load(&face, load, threads, ms, &failed, &cpu);
		printf("ops=%.0f cpu_ops=%.0f virtual_calls=0 virtual_round_trips=0\n", ops, cpu);
	} else if (strcmp(alloc, "heap") == 0 && argv[6] != NULL) {
		mb_client *c = NULL;
		IHostMemoryManager *m;
		IHostMalloc *h;
		mb_client_stats before, after;
		for (int i = 0; i < 200 && mb_connect(argv[6], &c) != S_OK; i++)
			usleep(50000);
		if (c == NULL || mb_host_memory_manager(c, &m) != S_OK ||
		    m->lpVtbl->CreateMalloc(m, MALLOC_THREADSAFE, &h) != S_OK) {
			fprintf(stderr, "allocbench: no heap: %s\n", mb_last_error());
			return 1;
		}
		alloc_face face = {heap_alloc, heap_free, h};
		mb_get_client_stats(c, &before);
		ops = run_load(&face, load, threads, ms, &failed, &cpu);
		mb_get_client_stats(c, &after);
		printf("ops=%.0f cpu_ops=%.0f virtual_calls=%" PRIu64
		       " virtual_round_trips=%" PRIu64 "\n",
		       ops, cpu,
		       after.alloc_calls + after.free_calls - before.alloc_calls -
			   before.free_calls,
		       after.alloc_remote + after.free_remote - before.alloc_remote -
			   before.free_remote);
		h->lpVtbl->Release(h);
		m->lpVtbl->Release(m);
		mb_disconnect(c);
	} else {
		return 2;
	}
#endif
	fflush(stdout);
	return failed ? 1 : 0;
}

#ifndef MB_WITH_MIMALLOC
enum { A_HEAP, A_GLIBC, A_MIMALLOC, NALLOC };
static const char *const alloc_names[NALLOC] = {"heap", "glibc", "mimalloc"};
static const int thread_counts[] = {1, 2, 4};
#define NTHREADS   3
#define MAX_ROUNDS 9

typedef struct cell {
	double ops[MAX_ROUNDS], cpu[MAX_ROUNDS];
	uint64_t vcalls, vrt;
	int n, failures;
} cell;

static char self_exe[4096];

static void run_cell(cell *cl, int alloc, load_kind load, int threads, long ms, const char *url)
{
	char t[16], d[32], out[512];
	char *argv[] = {alloc == A_MIMALLOC ? (char *)MIMALLOC_WORKER_PATH : self_exe,
			"--worker",
			(char *)alloc_names[alloc],
			load == LOAD_MIXED ? "mixed" : "small",
			t,
			d,
			(char *)url,
			NULL};
	double ops, cpu;
	unsigned long long vc, vr;

	snprintf(t, sizeof(t), "%d", threads);
	snprintf(d, sizeof(d), "%ld", ms);
	if (bench_run(argv, out, sizeof(out)) != 0 ||
	    sscanf(out, "ops=%lf cpu_ops=%lf virtual_calls=%llu virtual_round_trips=%llu", &ops,
		   &cpu, &vc, &vr) != 4) {
		cl->failures++;
		return;
	}
	cl->cpu[cl->n] = cpu;
	cl->ops[cl->n++] = ops;
	cl->vcalls += vc;
	cl->vrt += vr;
}

int main(int argc, char **argv)
{
	bool quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
	int rounds = quick ? 1 : 7;
	long ms = quick ? 300 : 700;
	static cell cells[2][NALLOC][NTHREADS];
	double med[2][NALLOC][NTHREADS], cmed[2][NALLOC][NTHREADS];
	char load0[64], load1[64];
	bench_broker b;

	if (argc >= 7 && strcmp(argv[1], "--worker") == 0)
		return worker_main(argv);
	ssize_t n = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
	if (n <= 0)
		return 1;
	self_exe[n] = '\0';
	bench_loadavg(load0, sizeof(load0));
	uint64_t t0 = bench_now_ns();
	bench_broker_start(&b, MEMBROKERD_PATH, NULL);
	fprintf(stderr, "mb_allocbench: broker at %s; %d rounds of %ld ms per cell\n", b.url,
		rounds, ms);
	for (int r = 0; r < rounds; r++)
		for (int l = 0; l < 2; l++)
			for (int ti = 0; ti < NTHREADS; ti++)
				for (int a = 0; a < NALLOC; a++)
					run_cell(&cells[l][a][ti], a, (load_kind)l,
						 thread_counts[ti], ms, b.url);
	bench_broker_stop(&b);
	bench_loadavg(load1, sizeof(load1));

	printf("\nCreateMalloc heap against glibc malloc and mimalloc (%s mode), %.0f s\n",
	       quick ? "quick" : "full", (double)(bench_now_ns() - t0) / 1e9);
	printf("/proc/loadavg at start: %s; at end: %s; %ld CPUs\n", load0, load1,
	       sysconf(_SC_NPROCESSORS_ONLN));
	printf(
	    "Mops/s (allocations + frees, all threads), median of %d runs of %ld ms, each after a "
	    "%d ms warm-up; 1024 slots per thread.\nwall: per second of wall time; cpu: per second "
	    "of the worker's CPU time (all its threads; the broker's is not counted)\n",
	    rounds, ms, WARM_MS);
	int failures = 0;
	for (int l = 0; l < 2; l++) {
		printf("  %s\n", l == 0 ? "small: 8-264 bytes"
					: "mixed: 1 in 64 of 264 B-1 MiB, the rest 8-264 bytes");
		printf("  %7s %5s %9s %9s %9s %10s %10s\n", "threads", "", "heap", "glibc",
		       "mimalloc", "vs glibc", "vs mimalloc");
		for (int ti = 0; ti < NTHREADS; ti++) {
			for (int a = 0; a < NALLOC; a++) {
				cell *cl = &cells[l][a][ti];
				med[l][a][ti] = bench_median(cl->ops, (size_t)cl->n) / 1e6;
				cmed[l][a][ti] = bench_median(cl->cpu, (size_t)cl->n) / 1e6;
				failures += cl->failures;
			}
			for (int k = 0; k < 2; k++) {
				double(*m)[NALLOC][NTHREADS] = k == 0 ? med : cmed;
				printf("  %7d %5s %9.2f %9.2f %9.2f %9.2fx %9.2fx\n",
				       thread_counts[ti], k == 0 ? "wall" : "cpu", m[l][A_HEAP][ti],
				       m[l][A_GLIBC][ti], m[l][A_MIMALLOC][ti],
				       m[l][A_GLIBC][ti] > 0 ? m[l][A_HEAP][ti] / m[l][A_GLIBC][ti]
							     : 0,
				       m[l][A_MIMALLOC][ti] > 0
					   ? m[l][A_HEAP][ti] / m[l][A_MIMALLOC][ti]
					   : 0);
			}
		}
		uint64_t vc = 0, vr = 0;
		for (int ti = 0; ti < NTHREADS; ti++) {
			vc += cells[l][A_HEAP][ti].vcalls;
			vr += cells[l][A_HEAP][ti].vrt;
		}
		printf("  heap's VirtualAlloc/VirtualFree calls: %" PRIu64 ", of which %" PRIu64
		       " made a round trip\n",
		       vc, vr);
		/* Each allocator against itself: on a shared machine the load moves all three
		 * alike, so the heap's scaling is best read next to the others'. */
		printf("  scaling, wall (cpu), against 1 thread:");
		for (int a = 0; a < NALLOC; a++)
			printf("%s %s 2: %.2fx (%.2fx), 4: %.2fx (%.2fx)", a == 0 ? "" : ";",
			       alloc_names[a], med[l][a][1] / med[l][a][0],
			       cmed[l][a][1] / cmed[l][a][0], med[l][a][2] / med[l][a][0],
			       cmed[l][a][2] / cmed[l][a][0]);
		printf("\n");
	}
	printf("\nTargets (issue: heap against glibc in the same run; wall time, and CPU time)\n");
	struct {
		const char *text;
		int load, num_alloc, num_t, den_alloc, den_t;
		double limit;
	} tg[] = {
	    {"small sizes, 1 thread, heap/glibc >= 0.8", 0, A_HEAP, 0, A_GLIBC, 0, 0.8},
	    {"small sizes, 2 threads, heap/glibc >= 0.8", 0, A_HEAP, 1, A_GLIBC, 1, 0.8},
	    {"mixed sizes, 1 thread, heap/glibc >= 0.5", 1, A_HEAP, 0, A_GLIBC, 0, 0.5},
	    {"mixed sizes, 2 threads, heap/glibc >= 0.5", 1, A_HEAP, 1, A_GLIBC, 1, 0.5},
	    {"small, heap 2 threads / 1 thread >= 1.0", 0, A_HEAP, 1, A_HEAP, 0, 1.0},
	    {"mixed, heap 2 threads / 1 thread >= 1.0", 1, A_HEAP, 1, A_HEAP, 0, 1.0},
	};
	printf("  %-46s %7s %-8s %7s\n", "", "wall", "", "cpu");
	for (size_t i = 0; i < sizeof(tg) / sizeof(tg[0]); i++) {
		double w = med[tg[i].load][tg[i].num_alloc][tg[i].num_t] /
			   med[tg[i].load][tg[i].den_alloc][tg[i].den_t];
		double c = cmed[tg[i].load][tg[i].num_alloc][tg[i].num_t] /
			   cmed[tg[i].load][tg[i].den_alloc][tg[i].den_t];
		/* Thread scaling is about wall time: CPU time does not show it. */
		bool scaling = tg[i].num_alloc == tg[i].den_alloc;
		printf("  %-46s %6.2fx %-8s", tg[i].text, w, w >= tg[i].limit ? "met" : "NOT MET");
		if (scaling)
			printf(" %7s\n", "-");
		else
			printf(" %6.2fx %s\n", c, c >= tg[i].limit ? "met" : "NOT MET");
	}
	if (failures)
		printf("  %d worker run(s) failed\n", failures);
	return failures ? 1 : 0;
}
#else
int main(int argc, char **argv)
{
	if (argc >= 6 && strcmp(argv[1], "--worker") == 0)
		return worker_main(argv);
	fprintf(stderr, "mb_allocbench_mimalloc: a worker of mb_allocbench\n");
	return 2;
}
#endif
