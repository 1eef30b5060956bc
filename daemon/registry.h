/*
 * registry.h: the broker's index of sections (by session id) and of connections (by nng pipe id).
 *
 * A connection is only a way in: its peer's credentials (SO_PEERCRED at connect) and, after
 * Hello, the section it is attached to. Everything about memory lives in the section
 * (section.h), found by its id; a connection's pipe id keys nothing but the connection.
 *
 * Data only; no policy and no I/O. Lock contract: every function runs with the broker lock held.
 */
#ifndef MB_REGISTRY_H
#define MB_REGISTRY_H

#include <stdbool.h>
#include <stdint.h>

#include <bsd/sys/tree.h>

#include "section.h"

typedef struct mb_conn {
	RB_ENTRY(mb_conn) by_pipe;
	uint32_t pipe_id;
	pid_t pid; /* the peer at connect (SO_PEERCRED) */
	uid_t uid;
	gid_t gid;
	int pidfd;	     /* the peer process until Hello hands it to the section; -1 after */
	bool hello;	     /* said Hello: a second one is a protocol error */
	mb_section *section; /* attached section; NULL before Hello and after it ended */
} mb_conn;

RB_HEAD(mb_conn_tree, mb_conn);

/* Pipes whose end was reported before their start: nng 1.5.2 runs a pipe's ADD_POST and
 * REM_POST callbacks on different threads without ordering them, so a peer that connects and
 * hangs up at once (the broker's own self-probe, every second) can be removed before it is
 * added. The most recent ones are remembered so the late ADD_POST adds nothing. */
#define MB_REGISTRY_GONE_PIPES 256
RB_HEAD(mb_section_tree, mb_section);

typedef struct mb_registry {
	struct mb_conn_tree conns_by_pipe;
	struct mb_section_tree sections_by_id;
	uint32_t conns;	   /* connections */
	uint32_t sections; /* live sections: attached, detached or restored */
	uint64_t next_id;  /* section (session) ids are never reused while the broker runs */
	uint32_t gone[MB_REGISTRY_GONE_PIPES]; /* ring of the last pipe ids that ended */
	uint32_t gone_next;
} mb_registry;

void mb_registry_init(mb_registry *r);

/* Adds a connection. 0, or -EEXIST when its pipe id is known already. */
int mb_registry_add_conn(mb_registry *r, mb_conn *c);
void mb_registry_remove_conn(mb_registry *r, mb_conn *c);
mb_conn *mb_registry_conn(const mb_registry *r, uint32_t pipe_id);

/* Notes that pipe_id ended (its start may still come, late).
 * Overwrites the oldest note: a start that comes over 256 pipe ends late is caught by the
 * sweep of connections whose process exited, or lives as long as its process. */
void mb_registry_pipe_gone(mb_registry *r, uint32_t pipe_id);
/* Whether pipe_id ended before this start; forgets the note. */
bool mb_registry_take_gone(mb_registry *r, uint32_t pipe_id);

/* Adds a section; id 0 gives it the next free id, another id is kept (a restored section). 0 or
 * -EEXIST. */
int mb_registry_add_section(mb_registry *r, mb_section *s);
void mb_registry_remove_section(mb_registry *r, mb_section *s);
mb_section *mb_registry_section(const mb_registry *r, uint64_t id);

/* The section attached to connection pipe_id, or NULL. */
mb_section *mb_registry_by_pipe(const mb_registry *r, uint32_t pipe_id);

/* Every live section, in id order: for (s = first; s; s = next(s)). */
mb_section *mb_registry_first(const mb_registry *r);
mb_section *mb_registry_next(const mb_section *s);

/* Every connection, in pipe order. */
mb_conn *mb_registry_first_conn(const mb_registry *r);
mb_conn *mb_registry_next_conn(const mb_conn *c);

/* Connections, and live sections, of one uid (the per-uid limits). */
uint32_t mb_registry_conns_of(const mb_registry *r, uid_t uid);
uint32_t mb_registry_sections_of(const mb_registry *r, uid_t uid);

#endif
