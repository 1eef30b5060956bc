/*
 * notify.c: memory-pressure notifications. A thread of the library long-polls the broker (Watch
 * requests, parked by the broker until its pressure level changes) and calls the registered
 * callback with no library lock held.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include "client_internal.h"

/* Longer than the broker's refresh interval (30 s), so a healthy long poll never times out. */
#define WATCH_TIMEOUT_MS 60000
/* Pause between attempts to reach a broker that is gone. */
#define RETRY_MS 200

/* Set on the notification thread when its client was torn down from inside the callback (the
 * callback dropped the last reference): the thread must then leave without touching the client. */
static _Thread_local bool client_gone;

/* Calls the registered callback, if any, with level. false: the client was torn down from inside
 * it, and the thread must leave without touching it. */
static bool call_back(mb_client *c, uint32_t level)
{
	pthread_mutex_lock(&c->notify_lock);
	mb_memory_callback cb = c->notify_cb;
	void *ctx = c->notify_ctx;
	if (cb != NULL)
		c->in_callback = true;
	pthread_mutex_unlock(&c->notify_lock);
	if (cb == NULL)
		return true;
	cb((EMemoryAvailable)level, ctx);
	if (client_gone)
		return false;
	pthread_mutex_lock(&c->notify_lock);
	c->in_callback = false;
	pthread_cond_broadcast(&c->notify_done);
	pthread_mutex_unlock(&c->notify_lock);
	return true;
}

static void *watch_thread(void *arg)
{
	mb_client *c = arg;
	uint32_t last = 0;

	while (!atomic_load(&c->watch_stop) && !atomic_load(&c->disabled)) {
		Membroker__V1__Request req = MEMBROKER__V1__REQUEST__INIT;
		Membroker__V1__Watch w = MEMBROKER__V1__WATCH__INIT;
		mb_response *resp;
		uint32_t level = 0;

		if (atomic_load(&c->lost)) {
			/* The connection is gone: this thread brings the client back as soon as a
			 * broker is there, so even an idle client is counted again after a broker
			 * restart. (Sending now would only queue until nng redials.) */
			usleep(RETRY_MS * 1000);
			if (mb_client_usable_or_reconnect(c) == S_OK)
				last = 0; /* a new broker: report its level */
			continue;
		}
		/* A callback registered after this thread learnt the level (the thread was started
		 * for a heap's hook): it first receives the current level, as promised. */
		if (atomic_exchange(&c->notify_fresh, false) && last != 0) {
			if (!call_back(c, last))
				return NULL;
			continue;
		}
		w.last_level = last;
		req.body_case = MEMBROKER__V1__REQUEST__BODY_WATCH;
		req.watch = &w;
		if (mb_client_call_on(c, c->watch_slot, &req, &resp, WATCH_TIMEOUT_MS, NULL) !=
		    S_OK)
			continue; /* stopped, or lost (then retried above) */
		if (resp->body_case == MEMBROKER__V1__RESPONSE__BODY_WATCH)
			level = resp->watch->level;
		mb_wire_free_response(resp);
		if (level < eMemoryAvailableLow || level > eMemoryAvailableHigh || level == last)
			continue;
		last = level;
		pthread_mutex_lock(&c->hook_lock);
		for (mb_pressure_hook *h = c->hooks; h != NULL; h = h->next)
			h->fn((EMemoryAvailable)level, h->context);
		pthread_mutex_unlock(&c->hook_lock);
		/* The registered callback gets this level now; one registered meanwhile is owed
		 * nothing more. */
		atomic_store(&c->notify_fresh, false);
		if (!call_back(c, level))
			return NULL;
	}
	return NULL;
}

/* Starts the thread; notify_lock held. */
static int start_thread(mb_client *c)
{
	if (c->watch_slot == NULL && (c->watch_slot = mb_client_slot_new(c)) == NULL)
		return -1;
	if (pthread_create(&c->watch_thread, NULL, watch_thread, c) != 0) {
		mb_client_slot_free(c->watch_slot);
		c->watch_slot = NULL;
		return -1;
	}
	c->watch_started = true;
	return 0;
}

HRESULT mb_register_memory_notification(mb_client *c, mb_memory_callback callback, void *context)
{
	HRESULT hr;

	if ((hr = mb_client_usable_or_reconnect(c)) != S_OK)
		return hr;
	pthread_mutex_lock(&c->notify_lock);
	c->notify_cb = callback;
	c->notify_ctx = context;
	/* Once this returns, the previous callback is not running and will not be called again
	 * (unless this is called from that callback itself, which must not wait for itself). */
	while (c->in_callback &&
	       !(c->watch_started && pthread_equal(pthread_self(), c->watch_thread)))
		pthread_cond_wait(&c->notify_done, &c->notify_lock);
	if (callback != NULL && !c->watch_started && start_thread(c) != 0) {
		c->notify_cb = NULL;
		pthread_mutex_unlock(&c->notify_lock);
		return mb_client_error(E_OUTOFMEMORY, "cannot start the notification thread");
	}
	bool owed =
	    callback != NULL && c->watch_started && !pthread_equal(pthread_self(), c->watch_thread);
	if (owed)
		atomic_store(&c->notify_fresh, true);
	pthread_mutex_unlock(&c->notify_lock);
	/* The thread may be parked in a long poll that ends only when the level changes: cancel
	 * it until the thread has taken the flag (a cancel can fall just before the thread sends
	 * its next poll, hence the repeat). Bounded: the callback is owed, not awaited. */
	for (int i = 0; owed && atomic_load(&c->notify_fresh) && i < 400; i++) {
		nng_aio_cancel(c->watch_slot->aio);
		usleep(5000);
	}
	return S_OK;
}

HRESULT mb_notify_add_hook(mb_client *c, mb_pressure_hook *hook)
{
	pthread_mutex_lock(&c->notify_lock);
	if (!c->watch_started && start_thread(c) != 0) {
		pthread_mutex_unlock(&c->notify_lock);
		return E_OUTOFMEMORY;
	}
	pthread_mutex_unlock(&c->notify_lock);
	pthread_mutex_lock(&c->hook_lock);
	hook->next = c->hooks;
	c->hooks = hook;
	pthread_mutex_unlock(&c->hook_lock);
	return S_OK;
}

void mb_notify_remove_hook(mb_client *c, mb_pressure_hook *hook)
{
	pthread_mutex_lock(&c->hook_lock);
	for (mb_pressure_hook **p = &c->hooks; *p != NULL; p = &(*p)->next)
		if (*p == hook) {
			*p = hook->next;
			break;
		}
	pthread_mutex_unlock(&c->hook_lock);
}

void mb_notify_stop(mb_client *c)
{
	pthread_mutex_lock(&c->notify_lock);
	bool started = c->watch_started;
	c->watch_started = false;
	pthread_mutex_unlock(&c->notify_lock);
	if (!started)
		return;
	atomic_store(&c->watch_stop, true);
	if (pthread_equal(pthread_self(), c->watch_thread)) {
		/* The callback dropped the last reference: nobody can join this thread, and it
		 * must not touch the client after the callback returns. */
		client_gone = true;
		pthread_detach(c->watch_thread);
		mb_client_slot_free(c->watch_slot);
		c->watch_slot = NULL;
		return;
	}
	/* Aborts the long poll in flight and makes any later one fail at once. */
	nng_aio_stop(c->watch_slot->aio);
	pthread_join(c->watch_thread, NULL);
	mb_client_slot_free(c->watch_slot);
	c->watch_slot = NULL;
}
