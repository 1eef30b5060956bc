/*
 * registry.c: red-black trees of sessions by pipe id and by session id.
 */
#include "registry.h"

#include <errno.h>

static int cmp_pipe(const mb_session *a, const mb_session *b)
{
	return a->pipe_id < b->pipe_id ? -1 : a->pipe_id > b->pipe_id;
}

static int cmp_id(const mb_session *a, const mb_session *b)
{
	return a->id < b->id ? -1 : a->id > b->id;
}

/* libbsd's RB_GENERATE_STATIC uses an undefined __unused on Debian 12: spell it out. */
RB_GENERATE_INTERNAL(mb_session_pipe_tree, mb_session, by_pipe, cmp_pipe,
		     __attribute__((unused)) static)
RB_GENERATE_INTERNAL(mb_session_id_tree, mb_session, by_id, cmp_id, __attribute__((unused)) static)

void mb_registry_init(mb_registry *r)
{
	RB_INIT(&r->by_pipe);
	RB_INIT(&r->by_id);
	r->sessions = 0;
	r->clients = 0;
	r->next_id = 1;
}

int mb_registry_add(mb_registry *r, mb_session *s)
{
	if (RB_INSERT(mb_session_pipe_tree, &r->by_pipe, s) != NULL)
		return -EEXIST;
	r->sessions++;
	return 0;
}

void mb_registry_name(mb_registry *r, mb_session *s)
{
	s->id = r->next_id++;
	RB_INSERT(mb_session_id_tree, &r->by_id, s);
	r->clients++;
}

void mb_registry_remove(mb_registry *r, mb_session *s)
{
	RB_REMOVE(mb_session_pipe_tree, &r->by_pipe, s);
	if (s->hello) {
		RB_REMOVE(mb_session_id_tree, &r->by_id, s);
		r->clients--;
	}
	r->sessions--;
}

mb_session *mb_registry_by_pipe(const mb_registry *r, uint32_t pipe_id)
{
	mb_session key = {.pipe_id = pipe_id};
	return RB_FIND(mb_session_pipe_tree, (struct mb_session_pipe_tree *)&r->by_pipe, &key);
}

mb_session *mb_registry_by_id(const mb_registry *r, uint64_t id)
{
	mb_session key = {.id = id};
	return RB_FIND(mb_session_id_tree, (struct mb_session_id_tree *)&r->by_id, &key);
}

mb_session *mb_registry_first(const mb_registry *r)
{
	return RB_MIN(mb_session_pipe_tree, (struct mb_session_pipe_tree *)&r->by_pipe);
}

mb_session *mb_registry_next(const mb_session *s)
{
	return RB_NEXT(mb_session_pipe_tree, NULL, (mb_session *)s);
}

uint32_t mb_registry_count_uid(const mb_registry *r, uid_t uid)
{
	uint32_t n = 0;

	for (mb_session *o = mb_registry_first(r); o != NULL; o = mb_registry_next(o))
		n += o->uid == uid;
	return n;
}
