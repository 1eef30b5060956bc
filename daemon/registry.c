/*
 * registry.c: red-black trees of connections by pipe id and sections by id.
 */
#include "registry.h"

#include <errno.h>

static int cmp_pipe(const mb_conn *a, const mb_conn *b)
{
	return a->pipe_id < b->pipe_id ? -1 : a->pipe_id > b->pipe_id;
}

static int cmp_id(const mb_section *a, const mb_section *b)
{
	return a->id < b->id ? -1 : a->id > b->id;
}

/* libbsd's RB_GENERATE_STATIC uses an undefined __unused on Debian 12: spell it out. */
RB_GENERATE_INTERNAL(mb_conn_tree, mb_conn, by_pipe, cmp_pipe, __attribute__((unused)) static)
RB_GENERATE_INTERNAL(mb_section_tree, mb_section, by_id, cmp_id, __attribute__((unused)) static)

void mb_registry_init(mb_registry *r)
{
	RB_INIT(&r->conns_by_pipe);
	RB_INIT(&r->sections_by_id);
	r->conns = 0;
	r->sections = 0;
	r->next_id = 1;
}

int mb_registry_add_conn(mb_registry *r, mb_conn *c)
{
	if (RB_INSERT(mb_conn_tree, &r->conns_by_pipe, c) != NULL)
		return -EEXIST;
	r->conns++;
	return 0;
}

void mb_registry_remove_conn(mb_registry *r, mb_conn *c)
{
	RB_REMOVE(mb_conn_tree, &r->conns_by_pipe, c);
	r->conns--;
}

void mb_registry_pipe_gone(mb_registry *r, uint32_t pipe_id)
{
	if (pipe_id == 0) /* nng never uses 0; it marks a free slot */
		return;
	r->gone[r->gone_next] = pipe_id;
	r->gone_next = (r->gone_next + 1) % MB_REGISTRY_GONE_PIPES;
}

bool mb_registry_take_gone(mb_registry *r, uint32_t pipe_id)
{
	for (int i = 0; pipe_id != 0 && i < MB_REGISTRY_GONE_PIPES; i++)
		if (r->gone[i] == pipe_id) {
			r->gone[i] = 0;
			return true;
		}
	return false;
}

mb_conn *mb_registry_conn(const mb_registry *r, uint32_t pipe_id)
{
	mb_conn key = {.pipe_id = pipe_id};
	return RB_FIND(mb_conn_tree, (struct mb_conn_tree *)&r->conns_by_pipe, &key);
}

int mb_registry_add_section(mb_registry *r, mb_section *s)
{
	if (s->id == 0)
		s->id = r->next_id++;
	else if (s->id >= r->next_id)
		r->next_id = s->id + 1;
	if (RB_INSERT(mb_section_tree, &r->sections_by_id, s) != NULL)
		return -EEXIST;
	r->sections++;
	return 0;
}

void mb_registry_remove_section(mb_registry *r, mb_section *s)
{
	RB_REMOVE(mb_section_tree, &r->sections_by_id, s);
	r->sections--;
}

mb_section *mb_registry_section(const mb_registry *r, uint64_t id)
{
	mb_section key = {.id = id};
	return RB_FIND(mb_section_tree, (struct mb_section_tree *)&r->sections_by_id, &key);
}

mb_section *mb_registry_by_pipe(const mb_registry *r, uint32_t pipe_id)
{
	mb_conn *c = mb_registry_conn(r, pipe_id);
	return c != NULL ? c->section : NULL;
}

mb_section *mb_registry_first(const mb_registry *r)
{
	return RB_MIN(mb_section_tree, (struct mb_section_tree *)&r->sections_by_id);
}

mb_section *mb_registry_next(const mb_section *s)
{
	return RB_NEXT(mb_section_tree, NULL, (mb_section *)s);
}

mb_conn *mb_registry_first_conn(const mb_registry *r)
{
	return RB_MIN(mb_conn_tree, (struct mb_conn_tree *)&r->conns_by_pipe);
}

mb_conn *mb_registry_next_conn(const mb_conn *c)
{
	return RB_NEXT(mb_conn_tree, NULL, (mb_conn *)c);
}

uint32_t mb_registry_conns_of(const mb_registry *r, uid_t uid)
{
	uint32_t n = 0;

	for (mb_conn *c = mb_registry_first_conn(r); c != NULL; c = mb_registry_next_conn(c))
		n += c->uid == uid;
	return n;
}

uint32_t mb_registry_sections_of(const mb_registry *r, uid_t uid)
{
	uint32_t n = 0;

	for (mb_section *s = mb_registry_first(r); s != NULL; s = mb_registry_next(s))
		n += s->uid == uid;
	return n;
}
