/*
 * mb_wire.c: packing into nng messages and defensive unpacking.
 */
#include "mb_wire.h"

#include <string.h>

#include "mb_hresult.h"

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

/* protobuf-c accepts embedded NULs (the C string is cut) and any length: bound both. */
static int string_ok(const char *s, size_t max)
{
	return s != NULL && strnlen(s, max + 1) <= max;
}

static int request_ok(const mb_request *r)
{
	switch (r->body_case) {
	case MEMBROKER__V1__REQUEST__BODY_HELLO:
		return r->hello != NULL && string_ok(r->hello->name, MB_WIRE_MAX_NAME);
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
	case MEMBROKER__V1__REQUEST__BODY_SYNC:
		if (r->sync == NULL || r->sync->n_commits > MB_WIRE_MAX_SYNC)
			return 0;
		for (size_t i = 0; i < r->sync->n_commits; i++)
			if (r->sync->commits[i] == NULL)
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
	r = membroker__v1__request__unpack(NULL, len, data);
	if (r == NULL)
		return NULL;
	if (!request_ok(r)) {
		membroker__v1__request__free_unpacked(r, NULL);
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
		       (r->hello->fd_token.len == MB_WIRE_TOKEN_LEN || r->hello->fd_token.len == 0);
	case MEMBROKER__V1__RESPONSE__BODY_MEMORY_LOAD:
		return r->memory_load != NULL;
	case MEMBROKER__V1__RESPONSE__BODY_SESSION_STATUS:
		return r->session_status != NULL;
	case MEMBROKER__V1__RESPONSE__BODY_WATCH:
		return r->watch != NULL;
	case MEMBROKER__V1__RESPONSE__BODY_SYNC:
		return r->sync != NULL;
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
	r = membroker__v1__response__unpack(NULL, len, data);
	if (r == NULL)
		return NULL;
	if (!response_ok(r)) {
		membroker__v1__response__free_unpacked(r, NULL);
		return NULL;
	}
	return r;
}

void mb_wire_free_request(mb_request *req)
{
	if (req != NULL)
		membroker__v1__request__free_unpacked(req, NULL);
}

void mb_wire_free_response(mb_response *resp)
{
	if (resp != NULL)
		membroker__v1__response__free_unpacked(resp, NULL);
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
	default:
		return "invalid";
	}
}
