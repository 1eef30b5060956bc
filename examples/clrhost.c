/*
 * clrhost.c: an example runtime host that drives libmembroker's IHostMemoryManager and IHostMalloc
 * the way the CLR does (hosting.cpp / corhost.cpp):
 *
 *   - start-up: IHostMemoryManager from mb_host_memory_manager, CreateMalloc(MALLOC_THREADSAFE),
 *     RegisterMemoryNotificationCallback with the host's own ICLRMemoryNotificationCallback; every
 *     allocation before "the EE started" is eProcessCritical.
 *   - running: worker threads allocate objects through the heap and grow a GC-heap-like region
 *     (VirtualAlloc reserve once, commit in steps) at eTaskCritical, or at eAppDomainCritical while
 *     "holding a lock". Only S_OK counts as success; anything else is a refusal, counted per level.
 *   - a Low notification only sets a flag (OnMemoryNotification never blocks); the workers then
 *     "collect": free their cached objects and decommit the GC region beyond its initial part.
 *
 * Usage: mb_clrhost [--address A] [--seconds N] [--id K] [--threads T] [--spawn P]
 *   --spawn P forks P copies (ids 0..P-1) before any library call and waits for them; the exit
 *   status is 0 only if every copy exited 0. A copy exits non-zero on a broken invariant (corrupted
 *   object, unexpected HRESULT, failed start-up), never because the budget refused memory.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define COBJMACROS
#include <membroker.h>

#define KiB ((size_t)1024)
#define MiB ((size_t)1024 * 1024)

#define GC_RESERVE   (32 * MiB) /* the GC heap's reservation */
#define GC_INITIAL   (1 * MiB)	/* committed at start-up, never decommitted */
#define GC_STEP	     (256 * KiB)
#define CACHE	     512 /* objects a worker keeps alive */
#define MAX_THREADS  16
#define STARTUP_OBJS 64

static const char *const level_name[3] = {"task", "appdomain", "process"};

typedef struct host {
	IHostMemoryManager *mm;
	IHostMalloc *heap;
	int id;
	time_t deadline;

	pthread_mutex_t gc_lock; /* guards the GC region's commit frontier */
	char *gc_base;
	size_t gc_committed;

	atomic_ulong gc_epoch; /* bumped by a Low notification */
	atomic_ulong allocations, frees, refused[3], gcs, corrupt, unexpected;
	atomic_ulong gc_commits, gc_refused;
} host;

/* ---- the host's ICLRMemoryNotificationCallback (one static object, like the CLR's) ---- */

typedef struct notify_cb {
	ICLRMemoryNotificationCallback iface;
	host *h;
	atomic_ulong low, neutral, high;
} notify_cb;

static const IID iid_iunknown = MB_IID_IUNKNOWN_INIT;
static const IID iid_callback = MB_IID_ICLRMEMORYNOTIFICATIONCALLBACK_INIT;

static HRESULT STDMETHODCALLTYPE cb_query_interface(ICLRMemoryNotificationCallback *This,
						    const IID *riid, void **ppv)
{
	if (ppv == NULL)
		return E_POINTER;
	*ppv = NULL;
	if (memcmp(riid, &iid_iunknown, sizeof(IID)) != 0 &&
	    memcmp(riid, &iid_callback, sizeof(IID)) != 0)
		return E_NOINTERFACE;
	*ppv = This;
	return S_OK;
}

/* Static object: AddRef/Release return 1, as the CLR's CCLRMemoryNotificationCallback does. */
static MB_ULONG STDMETHODCALLTYPE cb_add_ref(ICLRMemoryNotificationCallback *This)
{
	(void)This;
	return 1;
}

static MB_ULONG STDMETHODCALLTYPE cb_release(ICLRMemoryNotificationCallback *This)
{
	(void)This;
	return 1;
}

/* Never blocks: records the level and asks the workers for a collection. */
static HRESULT STDMETHODCALLTYPE cb_on_memory_notification(ICLRMemoryNotificationCallback *This,
							   EMemoryAvailable level)
{
	notify_cb *cb = (notify_cb *)This;
	switch (level) {
	case eMemoryAvailableLow:
		atomic_fetch_add(&cb->low, 1);
		atomic_fetch_add(&cb->h->gc_epoch, 1);
		break;
	case eMemoryAvailableNeutral:
		atomic_fetch_add(&cb->neutral, 1);
		break;
	case eMemoryAvailableHigh:
		atomic_fetch_add(&cb->high, 1);
		break;
	}
	return S_OK;
}

static const ICLRMemoryNotificationCallbackVtbl cb_vtbl = {
    cb_query_interface,
    cb_add_ref,
    cb_release,
    cb_on_memory_notification,
};

/* ---- helpers ---- */

static uint64_t next_rand(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* Anything but S_OK is a failure; refusals are expected under a budget, the rest is not. */
static bool refusal(HRESULT hr)
{
	return hr == E_OUTOFMEMORY || hr == HOST_E_TIMEOUT;
}

static void note_failure(host *h, HRESULT hr, int level, const char *what)
{
	if (refusal(hr)) {
		atomic_fetch_add(&h->refused[level], 1);
		return;
	}
	atomic_fetch_add(&h->unexpected, 1);
	fprintf(stderr, "clrhost[%d]: %s at %s level: %s (0x%08X) %s\n", h->id, what,
		level_name[level], mb_hresult_name(hr), (unsigned)hr, mb_last_error());
}

typedef struct object {
	unsigned char *p;
	size_t size;
	unsigned char tag;
} object;

static void object_free(host *h, object *o)
{
	for (size_t i = 0; i < o->size; i++)
		if (o->p[i] != o->tag) {
			atomic_fetch_add(&h->corrupt, 1);
			break;
		}
	HRESULT hr = IHostMalloc_Free(h->heap, o->p);
	if (hr != S_OK)
		note_failure(h, hr, 0, "Free");
	atomic_fetch_add(&h->frees, 1);
	o->p = NULL;
}

/* Grows the GC region by one step at level, as the GC does when a generation needs room. */
static void gc_grow(host *h, int level)
{
	void *mem;
	pthread_mutex_lock(&h->gc_lock);
	if (h->gc_committed + GC_STEP <= GC_RESERVE) {
		HRESULT hr = IHostMemoryManager_VirtualAlloc(h->mm, h->gc_base + h->gc_committed,
							     GC_STEP, MEM_COMMIT, PAGE_READWRITE,
							     (EMemoryCriticalLevel)level, &mem);
		if (hr == S_OK) {
			memset(mem, 0x11, GC_STEP); /* "allocate objects" in it */
			h->gc_committed += GC_STEP;
			atomic_fetch_add(&h->gc_commits, 1);
		} else {
			atomic_fetch_add(&h->gc_refused, 1);
			note_failure(h, hr, level, "GC heap commit");
		}
	}
	pthread_mutex_unlock(&h->gc_lock);
}

/* A collection: the GC region shrinks back to its initial part. */
static void gc_collect(host *h)
{
	pthread_mutex_lock(&h->gc_lock);
	if (h->gc_committed > GC_INITIAL) {
		HRESULT hr = IHostMemoryManager_VirtualFree(
		    h->mm, h->gc_base + GC_INITIAL, h->gc_committed - GC_INITIAL, MEM_DECOMMIT);
		if (hr != S_OK)
			note_failure(h, hr, 0, "GC heap decommit");
		h->gc_committed = GC_INITIAL;
	}
	pthread_mutex_unlock(&h->gc_lock);
}

typedef struct worker {
	host *h;
	uint64_t rng;
	unsigned long gc_seen;
	object cache[CACHE];
} worker;

static void *work(void *arg)
{
	worker *w = arg;
	host *h = w->h;

	while (time(NULL) < h->deadline) {
		unsigned long epoch = atomic_load(&h->gc_epoch);
		if (epoch != w->gc_seen) {
			/* Low memory reported: every worker frees its cached objects, the GC region
			 * shrinks back. */
			w->gc_seen = epoch;
			atomic_fetch_add(&h->gcs, 1);
			for (size_t k = 0; k < CACHE; k++)
				if (w->cache[k].p != NULL)
					object_free(h, &w->cache[k]);
			gc_collect(h);
		}
		/* "Holding a lock" one time in ten: failure would doom the AppDomain. */
		int level = next_rand(&w->rng) % 10 == 0 ? eAppDomainCritical : eTaskCritical;
		size_t i = (size_t)(next_rand(&w->rng) % CACHE);
		object *o = &w->cache[i];
		if (o->p != NULL) {
			object_free(h, o);
			continue;
		}
		if (next_rand(&w->rng) % 64 == 0) {
			gc_grow(h, level);
			continue;
		}
		/* 16 B .. 64 KiB, log-uniform. */
		unsigned e = 4 + (unsigned)(next_rand(&w->rng) % 12);
		size_t size = ((size_t)1 << e) + (size_t)(next_rand(&w->rng) % ((size_t)1 << e));
		void *p = NULL;
		HRESULT hr = IHostMalloc_Alloc(h->heap, size, (EMemoryCriticalLevel)level, &p);
		if (hr != S_OK) {
			note_failure(h, hr, level, "Alloc");
			/* A refused allocation is what makes a runtime collect. */
			for (size_t k = 0; k < CACHE; k += 2)
				if (w->cache[k].p != NULL)
					object_free(h, &w->cache[k]);
			continue;
		}
		atomic_fetch_add(&h->allocations, 1);
		o->p = p;
		o->size = size;
		o->tag = (unsigned char)(next_rand(&w->rng) % 255 + 1);
		memset(p, o->tag, size);
	}
	for (size_t k = 0; k < CACHE; k++)
		if (w->cache[k].p != NULL)
			object_free(h, &w->cache[k]);
	return NULL;
}

static int run(const char *address, int id, int seconds, int threads)
{
	mb_client *client = NULL;
	host h;
	notify_cb cb;
	worker *workers;
	pthread_t tid[MAX_THREADS];
	void *startup[STARTUP_OBJS];
	char name[64];
	HRESULT hr;
	int rc = 0;

	memset(&h, 0, sizeof(h));
	memset(&cb, 0, sizeof(cb));
	h.id = id;
	pthread_mutex_init(&h.gc_lock, NULL);
	cb.iface.lpVtbl = &cb_vtbl;
	cb.h = &h;

	snprintf(name, sizeof(name), "clrhost-%d", id);
	if ((hr = mb_connect_named(address, name, &client)) != S_OK) {
		fprintf(stderr, "clrhost[%d]: mb_connect: %s %s\n", id, mb_hresult_name(hr),
			mb_last_error());
		return 2;
	}
	/* What IHostControl::GetHostManager(IID_IHostMemoryManager) would hand the CLR. */
	if ((hr = mb_host_memory_manager(client, &h.mm)) != S_OK) {
		fprintf(stderr, "clrhost[%d]: no memory manager: %s\n", id, mb_hresult_name(hr));
		mb_disconnect(client);
		return 2;
	}
	/* The manager holds the client; the handle is not needed any more. */
	mb_disconnect(client);

	/* CorHost2::SetHostControl: CreateMalloc, then the callback; failure = E_UNEXPECTED. */
	if ((hr = IHostMemoryManager_CreateMalloc(h.mm, MALLOC_THREADSAFE, &h.heap)) != S_OK ||
	    (hr = IHostMemoryManager_RegisterMemoryNotificationCallback(h.mm, &cb.iface)) != S_OK) {
		fprintf(stderr, "clrhost[%d]: hosting set-up failed: %s\n", id,
			mb_hresult_name(hr));
		if (h.heap != NULL)
			IHostMalloc_Release(h.heap);
		IHostMemoryManager_Release(h.mm);
		return 2;
	}

	/* Start-up (!g_fEEStarted): everything is eProcessCritical; a failure disables the CLR. */
	void *gc = NULL;
	hr = IHostMemoryManager_VirtualAlloc(h.mm, NULL, GC_RESERVE, MEM_RESERVE, PAGE_READWRITE,
					     eProcessCritical, &gc);
	if (hr == S_OK)
		hr = IHostMemoryManager_VirtualAlloc(h.mm, gc, GC_INITIAL, MEM_COMMIT,
						     PAGE_READWRITE, eProcessCritical, &gc);
	for (int i = 0; i < STARTUP_OBJS && hr == S_OK; i++) {
		hr = IHostMalloc_Alloc(h.heap, 64 + 16 * (size_t)i, eProcessCritical, &startup[i]);
		if (hr == S_OK)
			memset(startup[i], 0xC1, 64 + 16 * (size_t)i);
		else
			startup[i] = NULL;
	}
	if (hr != S_OK) {
		fprintf(stderr,
			"clrhost[%d]: start-up allocation failed (%s): the runtime is disabled\n",
			id, mb_hresult_name(hr));
		IHostMalloc_Release(h.heap); /* returns what the heap holds */
		IHostMemoryManager_Release(h.mm);
		return 2;
	}
	h.gc_base = gc;
	h.gc_committed = GC_INITIAL;
	h.deadline = time(NULL) + seconds;

	workers = calloc((size_t)threads, sizeof(*workers));
	if (workers == NULL)
		return 2;
	for (int i = 0; i < threads; i++) {
		workers[i].h = &h;
		workers[i].rng = 0x9E3779B97F4A7C15ull * (uint64_t)(id * MAX_THREADS + i + 1) ^
				 (uint64_t)getpid();
		if (pthread_create(&tid[i], NULL, work, &workers[i]) != 0) {
			fprintf(stderr, "clrhost[%d]: pthread_create failed\n", id);
			threads = i;
			rc = 2;
			break;
		}
	}
	for (int i = 0; i < threads; i++)
		pthread_join(tid[i], NULL);
	free(workers);

	/* Shutdown: give everything back, then drop the COM references. */
	for (int i = 0; i < STARTUP_OBJS; i++)
		if (IHostMalloc_Free(h.heap, startup[i]) != S_OK)
			atomic_fetch_add(&h.unexpected, 1);
	if ((hr = IHostMemoryManager_VirtualFree(h.mm, h.gc_base, 0, MEM_RELEASE)) != S_OK)
		note_failure(&h, hr, 0, "GC heap release");
	IHostMemoryManager_RegisterMemoryNotificationCallback(h.mm, NULL);
	IHostMalloc_Release(h.heap);
	IHostMemoryManager_Release(h.mm);

	printf(
	    "clrhost[%d]: %lu allocations, %lu frees, refused task %lu appdomain %lu process %lu; "
	    "GC heap commits %lu (refused %lu), collections %lu; notifications low %lu neutral "
	    "%lu high %lu; corrupt %lu, unexpected %lu\n",
	    id, atomic_load(&h.allocations), atomic_load(&h.frees), atomic_load(&h.refused[0]),
	    atomic_load(&h.refused[1]), atomic_load(&h.refused[2]), atomic_load(&h.gc_commits),
	    atomic_load(&h.gc_refused), atomic_load(&h.gcs), atomic_load(&cb.low),
	    atomic_load(&cb.neutral), atomic_load(&cb.high), atomic_load(&h.corrupt),
	    atomic_load(&h.unexpected));
	fflush(stdout);
	if (atomic_load(&h.corrupt) != 0 || atomic_load(&h.unexpected) != 0 ||
	    atomic_load(&h.allocations) != atomic_load(&h.frees))
		rc = 1;
	pthread_mutex_destroy(&h.gc_lock);
	return rc;
}

static void usage(void)
{
	fprintf(stderr, "usage: mb_clrhost [--address A] [--seconds N] [--id K] [--threads T] "
			"[--spawn P]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"address", required_argument, NULL, 'a'},
	    {"seconds", required_argument, NULL, 's'},
	    {"id", required_argument, NULL, 'i'},
	    {"threads", required_argument, NULL, 't'},
	    {"spawn", required_argument, NULL, 'p'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *address = NULL;
	int seconds = 5, id = 0, threads = 2, spawn = 0, c;

	while ((c = getopt_long(argc, argv, "a:s:i:t:p:h", opts, NULL)) != -1) {
		switch (c) {
		case 'a':
			address = optarg;
			break;
		case 's':
			seconds = atoi(optarg);
			break;
		case 'i':
			id = atoi(optarg);
			break;
		case 't':
			threads = atoi(optarg);
			break;
		case 'p':
			spawn = atoi(optarg);
			break;
		default:
			usage();
		}
	}
	if (optind != argc || seconds < 0 || threads < 1 || threads > MAX_THREADS || spawn < 0 ||
	    spawn > 64)
		usage();
	if (spawn == 0)
		return run(address, id, seconds, threads);

	/* Fork before any library call: nng must not be started in the parent. */
	pid_t pids[64];
	int failed = 0;
	for (int i = 0; i < spawn; i++) {
		fflush(stdout);
		pids[i] = fork();
		if (pids[i] < 0) {
			perror("fork");
			failed++;
			continue;
		}
		if (pids[i] == 0)
			_exit(run(address, id + i, seconds, threads));
	}
	for (int i = 0; i < spawn; i++) {
		int st;
		if (pids[i] <= 0)
			continue;
		while (waitpid(pids[i], &st, 0) < 0 && errno == EINTR)
			;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			fprintf(stderr, "clrhost[%d]: exited with status 0x%x\n", id + i, st);
			failed++;
		}
	}
	printf("clrhost: %d of %d processes succeeded\n", spawn - failed, spawn);
	return failed == 0 ? 0 : 1;
}
