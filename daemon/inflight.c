/*
 * inflight.c: per-connection and per-uid counts of requests in flight (inflight.h). A record exists
 * only while its count is above zero, so a closed connection leaves nothing behind once its last
 * request is answered.
 */
#include "inflight.h"

#include <stdlib.h>

#include <bsd/sys/tree.h>

typedef struct pipe_rec {
	RB_ENTRY(pipe_rec) link;
	uint32_t pipe_id;
	uid_t uid;
	uint32_t count;
} pipe_rec;

typedef struct uid_rec {
	RB_ENTRY(uid_rec) link;
	uid_t uid;
	uint32_t count;
} uid_rec;

static int cmp_pipe(const pipe_rec *a, const pipe_rec *b)
{
	return a->pipe_id < b->pipe_id ? -1 : a->pipe_id > b->pipe_id;
}

static int cmp_uid(const uid_rec *a, const uid_rec *b)
{
	return a->uid < b->uid ? -1 : a->uid > b->uid;
}

RB_HEAD(pipe_tree, pipe_rec);
RB_HEAD(uid_tree, uid_rec);
/* libbsd's RB_GENERATE_STATIC uses an undefined __unused on Debian 12: spell it out. */
RB_GENERATE_INTERNAL(pipe_tree, pipe_rec, link, cmp_pipe, __attribute__((unused)) static)
RB_GENERATE_INTERNAL(uid_tree, uid_rec, link, cmp_uid, __attribute__((unused)) static)

struct mb_inflight {
	struct pipe_tree pipes;
	struct uid_tree uids;
};

mb_inflight *mb_inflight_new(void)
{
	mb_inflight *t = calloc(1, sizeof(*t));

	if (t != NULL) {
		RB_INIT(&t->pipes);
		RB_INIT(&t->uids);
	}
	return t;
}

void mb_inflight_free(mb_inflight *t)
{
	pipe_rec *p;
	uid_rec *u;

	if (t == NULL)
		return;
	while ((p = RB_MIN(pipe_tree, &t->pipes)) != NULL) {
		RB_REMOVE(pipe_tree, &t->pipes, p);
		free(p);
	}
	while ((u = RB_MIN(uid_tree, &t->uids)) != NULL) {
		RB_REMOVE(uid_tree, &t->uids, u);
		free(u);
	}
	free(t);
}

static pipe_rec *find_pipe(const mb_inflight *t, uint32_t pipe_id)
{
	pipe_rec key = {.pipe_id = pipe_id};
	return RB_FIND(pipe_tree, (struct pipe_tree *)&t->pipes, &key);
}

static uid_rec *find_uid(const mb_inflight *t, uid_t uid)
{
	uid_rec key = {.uid = uid};
	return RB_FIND(uid_tree, (struct uid_tree *)&t->uids, &key);
}

mb_inflight_result mb_inflight_add(mb_inflight *t, uint32_t pipe_id, uid_t uid)
{
	pipe_rec *p = find_pipe(t, pipe_id);
	uid_rec *u;

	if (p != NULL)
		uid = p->uid;
	u = find_uid(t, uid);
	if (p != NULL && p->count >= MB_INFLIGHT_PER_PIPE)
		return MB_INFLIGHT_PIPE_FULL;
	if (uid != 0 && u != NULL && u->count >= MB_INFLIGHT_PER_UID)
		return MB_INFLIGHT_UID_FULL;
	if (p == NULL) {
		if ((p = calloc(1, sizeof(*p))) == NULL)
			return MB_INFLIGHT_NOMEM;
		p->pipe_id = pipe_id;
		p->uid = uid;
		RB_INSERT(pipe_tree, &t->pipes, p);
	}
	if (u == NULL) {
		if ((u = calloc(1, sizeof(*u))) == NULL) {
			if (p->count == 0) {
				RB_REMOVE(pipe_tree, &t->pipes, p);
				free(p);
			}
			return MB_INFLIGHT_NOMEM;
		}
		u->uid = uid;
		RB_INSERT(uid_tree, &t->uids, u);
	}
	p->count++;
	u->count++;
	return MB_INFLIGHT_OK;
}

void mb_inflight_done(mb_inflight *t, uint32_t pipe_id)
{
	pipe_rec *p = find_pipe(t, pipe_id);
	uid_rec *u;

	if (p == NULL)
		return;
	u = find_uid(t, p->uid);
	if (--p->count == 0) {
		RB_REMOVE(pipe_tree, &t->pipes, p);
		free(p);
	}
	if (u != NULL && --u->count == 0) {
		RB_REMOVE(uid_tree, &t->uids, u);
		free(u);
	}
}

uint32_t mb_inflight_pipe(const mb_inflight *t, uint32_t pipe_id)
{
	const pipe_rec *p = find_pipe(t, pipe_id);
	return p != NULL ? p->count : 0;
}

uint32_t mb_inflight_uid(const mb_inflight *t, uid_t uid)
{
	const uid_rec *u = find_uid(t, uid);
	return u != NULL ? u->count : 0;
}
