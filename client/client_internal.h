/*
 * client_internal.h: the mb_client object shared by the library's files (transport.h and
 * connection.h declare what those two files offer the others).
 */
#ifndef MB_CLIENT_INTERNAL_H
#define MB_CLIENT_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <nng/nng.h>

#include "connection.h"
#include "credit.h"
#include "mb_credit.h"
#include "mb_regmap.h"
#include "vaspace.h"
#include "mb_wire.h"
#include "membroker.h"
#include "transport.h"

/* One REQ context and its aio: one request in flight. Kept on a free list and reused. */
typedef struct mb_call_slot {
	nng_ctx ctx;
	nng_aio *aio;
	struct mb_call_slot *next;
} mb_call_slot;

struct mb_client {
	nng_socket sock;
	unsigned fork_generation; /* mb_fork_generation at connect: differs in a forked child */
	uint64_t session_id;
	uint64_t section_size;
	uint64_t budget;
	int section_fd;
	char address[512];
	char name[MB_WIRE_MAX_NAME + 1];

	/* map_lock guards map and the page states; never held across a round trip. */
	pthread_rwlock_t map_lock;
	mb_regmap map;
	mb_vaspace va; /* where reservations are placed (valid once section_fd is) */

	/* Commit credit (credit.c). The word is NULL when it could not be mapped. pending and
	 * inflight are guarded by map_lock; sync_lock is held across a Sync's round trip. */
	mb_credit_word *credit_word;
	mb_local_commit pending[MB_WIRE_MAX_SYNC];
	int npending;
	mb_local_commit inflight[MB_WIRE_MAX_SYNC];
	int ninflight;
	/* Reservations made against reservation credit, not yet reported / in the Sync in flight
	 * (guarded by map_lock, like the commits). */
	mb_local_reserve pending_res[MB_WIRE_MAX_SYNC];
	int npending_res;
	mb_local_reserve inflight_res[MB_WIRE_MAX_SYNC];
	int ninflight_res;
	/* Decommits and releases of pages and reservations the broker knew of, done locally and
	 * not yet reported / in the Sync in flight (guarded by map_lock). */
	mb_local_free pending_free[MB_WIRE_MAX_SYNC_FREES];
	int npending_free;
	mb_local_free inflight_free[MB_WIRE_MAX_SYNC_FREES];
	int ninflight_free;
	atomic_uint_fast64_t local_reserves, local_releases;
	pthread_mutex_t sync_lock;
	atomic_uint_fast64_t local_commits, local_decommits, syncs;

	/* mb_get_client_stats: calls of mb_virtual_alloc / mb_virtual_free, those of them that
	 * sent a request, and every request sent. */
	atomic_uint_fast64_t alloc_calls, alloc_remote, free_calls, free_remote, round_trips;

	pthread_mutex_t slot_lock;
	mb_call_slot *free_slots;

	atomic_bool disabled;	  /* E_FAIL seen: every later call fails (the contract) */
	atomic_bool lost;	  /* connection lost: the next call tries to reconnect */
	atomic_int pipes;	  /* live connections of the socket (nng redials by itself) */
	atomic_uint session_pipe; /* nng pipe id our session lives on (0: not known yet) */
	pthread_mutex_t reconnect_lock;
	uint32_t reconnects; /* successful reconnections, for tests and tools */
	uint32_t reattaches; /* ... of them, re-attaches to the section the broker kept */
	/* Re-attach after a dropped connection (connection.c): the one-time token of the last
	 * Hello, and whether a request that changes the books lost its reply with the connection
	 * (then the books may differ from ours, and the client registers everything again). */
	uint8_t attach_token[MB_WIRE_TOKEN_LEN];
	bool have_attach;
	atomic_bool unsure;
	atomic_uint_fast64_t next_request_id;
	atomic_uint refs;	   /* the user's handle plus live COM objects */
	atomic_bool disconnecting; /* mb_disconnect called; freed when refs reaches 0 */

	struct mb_client *next_client; /* process-wide list, for HOST_E_NOT_OWNER answers */
	struct mb_client *next_event;  /* process-wide list, for nng pipe events (connection.c) */

	pthread_mutex_t notify_lock; /* guards notify_cb, notify_ctx, watch_started */
	mb_memory_callback notify_cb;
	void *notify_ctx;
	bool watch_started;
	bool in_callback;	    /* the notification thread is inside notify_cb */
	pthread_cond_t notify_done; /* signalled when it leaves */
	atomic_bool watch_stop;
	/* A callback was registered while the thread already knew the level (it started for a
	 * heap's hook first): the thread owes it the current level. */
	atomic_bool notify_fresh;
	pthread_t watch_thread;
	mb_call_slot *watch_slot; /* the watch thread's own context, stopped at teardown */
	/* Listeners inside the library (the heaps' trim on Low); hook_lock is held while they
	 * run, so removing one waits for it. */
	pthread_mutex_t hook_lock;
	struct mb_pressure_hook *hooks;
};

/* A listener of pressure changes inside the library, called on the notification thread with
 * no other library lock held, before the user's callback. */
typedef struct mb_pressure_hook {
	void (*fn)(EMemoryAvailable level, void *context);
	void *context;
	struct mb_pressure_hook *next;
} mb_pressure_hook;

/* Adds hook, starting the notification thread if it does not run yet (notify.c). */
HRESULT mb_notify_add_hook(mb_client *client, mb_pressure_hook *hook);

/* Removes hook; once this returns it is not running and will not be called again. Must not be
 * called from a hook. */
void mb_notify_remove_hook(mb_client *client, mb_pressure_hook *hook);

/* Stops the notification thread, if any (notify.c). */
void mb_notify_stop(mb_client *client);

/* Reports address space the runtime maps by itself: op 1 needs, 2 acquired, 3 released (vm.c). */
HRESULT mb_client_address_space(mb_client *client, int op, const void *address, size_t size);

/* Unmaps every region (vm.c); used at disconnect. */
void mb_vm_unmap_all(mb_client *client);

#endif
