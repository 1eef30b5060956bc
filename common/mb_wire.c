/*
 * mb_wire.c: packing into nng messages and defensive unpacking.
 */
#include "mb_wire.h"

#include <stdalign.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mb_hresult.h"

#if defined(__SANITIZE_ADDRESS__)
#define MB_WIRE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MB_WIRE_ASAN 1
#endif
#endif
#ifdef MB_WIRE_ASAN
#include <sanitizer/asan_interface.h>
#endif

static int pack(const ProtobufCMessage *m, nng_msg **out)
{
	size_t n = protobuf_c_message_get_packed_size(m);
	nng_msg *msg = *out;
	int rv;

	if (n > MB_WIRE_MAX_MESSAGE)
		return NNG_EMSGSIZE;
	if (msg == NULL) {
		if ((rv = nng_msg_alloc(&msg, n)) != 0)
			return rv;
	} else {
		nng_msg_clear(msg);
		if ((rv = nng_msg_realloc(msg, n)) != 0)
			return rv;
	}
	protobuf_c_message_pack(m, nng_msg_body(msg));
	*out = msg;
	return 0;
}

int mb_wire_pack_request(const mb_request *req, nng_msg **out)
{
	if (req == NULL || out == NULL)
		return NNG_EINVAL;
	return pack(&req->base, out);
}

int mb_wire_pack_response(const mb_response *resp, nng_msg **out)
{
	if (resp == NULL || out == NULL)
		return NNG_EINVAL;
	return pack(&resp->base, out);
}

/*
 * Unpacking allocates from a per-thread arena instead of the heap: every request the broker serves
 * and every reply the library reads is unpacked and freed on one thread, one at a time, so a
 * message's memory can simply be reused once it is freed. protobuf-c's default allocator would
 * otherwise pay a malloc and a free per sub-message, and a walk of the whole message to free it.
 *
 * The arena is 16 KiB: a body is at most MB_WIRE_MAX_MESSAGE bytes, and the largest well-formed
 * one, a Sync of MB_WIRE_MAX_SYNC commits, as many reservations and MB_WIRE_MAX_SYNC_FREES frees,
 * takes under 14 KiB unpacked,
 * nearly half of it protobuf-c's scratch arrays (which it "frees" before returning, a no-op here).
 * The rest is headroom for the schema to grow; only hostile bodies (a thousand tiny fields) need
 * more.
 *
 * A body that does not fit is unpacked again on the heap rather than mixing arena and heap blocks
 * in one message. Mixing would force a full free_unpacked walk for every arena message to find the
 * heap blocks; failing over keeps the common free O(1) and costs a second decode only for bodies
 * no client sends. A second message unpacked while the arena still holds one goes to the heap as
 * well; freeing tells the two apart by the pointer the arena recorded.
 */
#define ARENA_SIZE  (16 * 1024)
#define ARENA_ALIGN alignof(max_align_t)

typedef struct arena {
	alignas(max_align_t) unsigned char buf[ARENA_SIZE];
	size_t used;
	/* An allocation did not fit: the unpack failed for want of room, not for bad bytes. */
	bool overflow;
	/* The message living in buf; NULL while the arena is free. */
	const ProtobufCMessage *msg;
} arena;

/*
 * Allocated on a thread's first unpack and freed when the thread exits: a host process links the
 * library into every thread it has, and most of them never talk to the broker, so the arena must
 * not live in static TLS (glibc would zero 16 KiB for every thread the host creates).
 */
static _Thread_local arena *tls_arena;
static pthread_key_t arena_key;
static pthread_once_t arena_once = PTHREAD_ONCE_INIT;
static bool arena_key_ok;

static void arena_destroy(void *p)
{
	free(p);
}

static void arena_key_init(void)
{
	arena_key_ok = pthread_key_create(&arena_key, arena_destroy) == 0;
}

/* This thread's arena, or NULL (no memory): then messages are unpacked on the heap. */
static arena *arena_get(void)
{
	arena *a = tls_arena;

	if (a != NULL)
		return a;
	pthread_once(&arena_once, arena_key_init);
	if (!arena_key_ok || (a = aligned_alloc(alignof(arena), sizeof(arena))) == NULL)
		return NULL;
	if (pthread_setspecific(arena_key, a) != 0) {
		free(a);
		return NULL;
	}
	a->msg = NULL;
	tls_arena = a;
	return a;
}

/*
 * Under ASan a freed message's memory must still fault on use, as the heap's would: the idle arena
 * is poisoned and each allocation unpoisoned.
 */
#ifdef MB_WIRE_ASAN
#define arena_poison(p, n)   ASAN_POISON_MEMORY_REGION(p, n)
#define arena_unpoison(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define arena_poison(p, n)   ((void)(p), (void)(n))
#define arena_unpoison(p, n) ((void)(p), (void)(n))
#endif

static void *arena_alloc(void *data, size_t size)
{
	arena *a = data;
	void *p;

	/* used and ARENA_SIZE are multiples of ARENA_ALIGN, so a size that fits still fits once
	 * rounded up. */
	if (size > ARENA_SIZE - a->used) {
		a->overflow = true;
		return NULL;
	}
	p = a->buf + a->used;
	a->used += (size + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
	arena_unpoison(p, size);
	return p;
}

/* Everything goes when the message is released. */
static void arena_free(void *data, void *p)
{
	(void)data;
	(void)p;
}

static ProtobufCMessage *unpack(const ProtobufCMessageDescriptor *desc, const void *data,
				size_t len)
{
	arena *a = arena_get();
	ProtobufCMessage *m;

	if (a != NULL && a->msg == NULL) {
		ProtobufCAllocator alloc = {
		    .alloc = arena_alloc, .free = arena_free, .allocator_data = a};

		a->used = 0;
		a->overflow = false;
		arena_poison(a->buf, sizeof(a->buf));
		m = protobuf_c_message_unpack(desc, &alloc, len, data);
		if (m != NULL) {
			a->msg = m;
			return m;
		}
		/* Decoding is deterministic: bytes refused with room to spare are refused on the
		 * heap too. */
		if (!a->overflow)
			return NULL;
	}
	return protobuf_c_message_unpack(desc, NULL, len, data);
}

static void release(ProtobufCMessage *m)
{
	arena *a = tls_arena;

	if (a != NULL && m == a->msg) {
		a->msg = NULL;
		arena_poison(a->buf, sizeof(a->buf));
		return;
	}
	protobuf_c_message_free_unpacked(m, NULL);
}

/* protobuf-c accepts embedded NULs (the C string is cut) and any length: bound both. */
static int string_ok(const char *s, size_t max)
{
	return s != NULL && strnlen(s, max + 1) <= max;
}

static int request_ok(const mb_request *r)
{
	switch (r->body_case) {
	case MEMBROKER__V1__REQUEST__BODY_HELLO:
		return r->hello != NULL && string_ok(r->hello->name, MB_WIRE_MAX_NAME) &&
		       (r->hello->resume_token.len == MB_WIRE_TOKEN_LEN ||
			r->hello->resume_token.len == 0);
	case MEMBROKER__V1__REQUEST__BODY_RESERVE:
		return r->reserve != NULL;
	case MEMBROKER__V1__REQUEST__BODY_RELEASE:
		return r->release != NULL;
	case MEMBROKER__V1__REQUEST__BODY_COMMIT:
		return r->commit != NULL;
	case MEMBROKER__V1__REQUEST__BODY_DECOMMIT:
		return r->decommit != NULL;
	case MEMBROKER__V1__REQUEST__BODY_RESET:
		return r->reset != NULL;
	case MEMBROKER__V1__REQUEST__BODY_RESET_UNDO:
		return r->reset_undo != NULL;
	case MEMBROKER__V1__REQUEST__BODY_MEMORY_LOAD:
		return r->memory_load != NULL;
	case MEMBROKER__V1__REQUEST__BODY_SESSION_STATUS:
		return r->session_status != NULL;
	case MEMBROKER__V1__REQUEST__BODY_WATCH:
		return r->watch != NULL;
	case MEMBROKER__V1__REQUEST__BODY_ADDRESS_SPACE:
		return r->address_space != NULL;
	case MEMBROKER__V1__REQUEST__BODY_ADOPT_DONE:
		return r->adopt_done != NULL;
	case MEMBROKER__V1__REQUEST__BODY_GOODBYE:
		return r->goodbye != NULL;
	case MEMBROKER__V1__REQUEST__BODY_SYNC:
		if (r->sync == NULL || r->sync->n_commits > MB_WIRE_MAX_SYNC ||
		    r->sync->n_reserves > MB_WIRE_MAX_SYNC ||
		    r->sync->n_frees > MB_WIRE_MAX_SYNC_FREES)
			return 0;
		for (size_t i = 0; i < r->sync->n_commits; i++)
			if (r->sync->commits[i] == NULL)
				return 0;
		for (size_t i = 0; i < r->sync->n_reserves; i++)
			if (r->sync->reserves[i] == NULL)
				return 0;
		for (size_t i = 0; i < r->sync->n_frees; i++)
			if (r->sync->frees[i] == NULL)
				return 0;
		return 1;
	default:
		return 0;
	}
}

mb_request *mb_wire_unpack_request(const void *data, size_t len)
{
	mb_request *r;

	if (data == NULL && len != 0)
		return NULL;
	if (len > MB_WIRE_MAX_MESSAGE)
		return NULL;
	r = (mb_request *)unpack(&membroker__v1__request__descriptor, data, len);
	if (r == NULL)
		return NULL;
	if (!request_ok(r)) {
		release(&r->base);
		return NULL;
	}
	return r;
}

static int response_ok(const mb_response *r)
{
	if (!mb_hresult_is_wire((HRESULT)r->hresult) || !string_ok(r->detail, MB_WIRE_MAX_DETAIL))
		return 0;
	switch (r->body_case) {
	case MEMBROKER__V1__RESPONSE__BODY__NOT_SET:
		return 1;
	case MEMBROKER__V1__RESPONSE__BODY_HELLO:
		return r->hello != NULL &&
		       (r->hello->fd_token.len == MB_WIRE_TOKEN_LEN ||
			r->hello->fd_token.len == 0) &&
		       (r->hello->attach_token.len == MB_WIRE_TOKEN_LEN ||
			r->hello->attach_token.len == 0);
	case MEMBROKER__V1__RESPONSE__BODY_MEMORY_LOAD:
		return r->memory_load != NULL;
	case MEMBROKER__V1__RESPONSE__BODY_SESSION_STATUS:
		return r->session_status != NULL;
	case MEMBROKER__V1__RESPONSE__BODY_WATCH:
		return r->watch != NULL;
	case MEMBROKER__V1__RESPONSE__BODY_SYNC:
		return r->sync != NULL;
	case MEMBROKER__V1__RESPONSE__BODY_ADOPT_DONE:
		return r->adopt_done != NULL && r->adopt_done->n_refused <= MB_WIRE_MAX_REFUSED;
	default:
		return 0;
	}
}

mb_response *mb_wire_unpack_response(const void *data, size_t len)
{
	mb_response *r;

	if (data == NULL && len != 0)
		return NULL;
	if (len > MB_WIRE_MAX_MESSAGE)
		return NULL;
	r = (mb_response *)unpack(&membroker__v1__response__descriptor, data, len);
	if (r == NULL)
		return NULL;
	if (!response_ok(r)) {
		release(&r->base);
		return NULL;
	}
	return r;
}

void mb_wire_free_request(mb_request *req)
{
	if (req != NULL)
		release(&req->base);
}

void mb_wire_free_response(mb_response *resp)
{
	if (resp != NULL)
		release(&resp->base);
}

const char *mb_wire_op_name(int body_case)
{
	switch (body_case) {
	case MEMBROKER__V1__REQUEST__BODY_HELLO:
		return "hello";
	case MEMBROKER__V1__REQUEST__BODY_RESERVE:
		return "reserve";
	case MEMBROKER__V1__REQUEST__BODY_RELEASE:
		return "release";
	case MEMBROKER__V1__REQUEST__BODY_COMMIT:
		return "commit";
	case MEMBROKER__V1__REQUEST__BODY_DECOMMIT:
		return "decommit";
	case MEMBROKER__V1__REQUEST__BODY_RESET:
		return "reset";
	case MEMBROKER__V1__REQUEST__BODY_RESET_UNDO:
		return "reset_undo";
	case MEMBROKER__V1__REQUEST__BODY_MEMORY_LOAD:
		return "memory_load";
	case MEMBROKER__V1__REQUEST__BODY_SESSION_STATUS:
		return "session_status";
	case MEMBROKER__V1__REQUEST__BODY_WATCH:
		return "watch";
	case MEMBROKER__V1__REQUEST__BODY_ADDRESS_SPACE:
		return "address_space";
	case MEMBROKER__V1__REQUEST__BODY_ADOPT_DONE:
		return "adopt_done";
	case MEMBROKER__V1__REQUEST__BODY_SYNC:
		return "sync";
	case MEMBROKER__V1__REQUEST__BODY_GOODBYE:
		return "goodbye";
	default:
		return "invalid";
	}
}

int mb_wire_dial(nng_socket sock, const char *url, int timeout_ms)
{
	struct timespec start, now;
	int rv;

	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		rv = nng_dial(sock, url, NULL, 0);
		if (rv != NNG_EAGAIN)
			return rv;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 >=
		    timeout_ms)
			return rv;
		usleep(1000);
	}
}
