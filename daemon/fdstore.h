/*
 * fdstore.h: systemd's file descriptor store, from the broker's side.
 *
 * systemd keeps descriptors a service gives it (sd_pid_notify_with_fds "FDSTORE=1") across a
 * restart of the service and hands them to the next process (sd_listen_fds_with_names). The
 * broker gives it, for every section, when the section is created (so that a crash keeps them
 * too):
 *
 *     section-<id>-<pid>-<uid>-<gid>   the section's memfd (its owner's ids in the name, so a
 *                                      broker restarted after a crash knows whose it is)
 *     owner-<id>                       the owner process's pidfd (a process that exits meanwhile
 *                                      is seen by the next broker, and its section freed)
 *
 * and removes both (FDSTOREREMOVE=1) when the section is freed: a stored memfd keeps its memory
 * alive in PID 1, and memfds cannot be polled, so systemd would never drop one by itself (FDPOLL=0
 * for the pidfds too, which a newer kernel reports as hung up once the process is reaped). At a
 * clean stop the books snapshot (snapshot.h) is stored as "snapshot".
 *
 * Enabled when $NOTIFY_SOCKET is set and $FDSTORE gives the store's size (FileDescriptorStoreMax=;
 * systemd 254 and later set $FDSTORE themselves, the unit sets it for 252). Beyond that size a
 * section is not stored (logged): it does not survive a restart, and its client registers again.
 *
 * Messages go out on the store's own thread, in the order they were queued: queueing duplicates the
 * descriptors and never waits for systemd, so it may be called with the broker lock held (the
 * lock's order keeps a section's store before its removal). Thread-safe.
 */
#ifndef MB_FDSTORE_H
#define MB_FDSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "section.h"

typedef struct mb_fdstore mb_fdstore;

/* FDNAME of the books snapshot. */
#define MB_FDSTORE_SNAPSHOT "snapshot"

/* Opens the store when enabled (above): 0 and *out, or 0 and *out = NULL when not enabled;
 * -errno. Every function below accepts a NULL store and then does nothing. */
int mb_fdstore_open(mb_fdstore **out);

/* Sends what is queued, then stops the thread and frees the store. */
void mb_fdstore_close(mb_fdstore *st);

/* Descriptors the store may hold ($FDSTORE), 0 for a NULL store. */
uint32_t mb_fdstore_capacity(const mb_fdstore *st);

/* Counts n descriptors already in the store (those a restarted broker was given back). */
void mb_fdstore_count_restored(mb_fdstore *st, uint32_t n);

/* Stores s's memfd and pidfd under s's names (s->stored is set when they fit). */
void mb_fdstore_keep_section(mb_fdstore *st, mb_section *s);

/* Removes s's descriptors from the store, if s->stored. */
void mb_fdstore_forget_section(mb_fdstore *st, mb_section *s);

/* Removes every descriptor stored under name (one the broker does not use any more). */
void mb_fdstore_forget(mb_fdstore *st, const char *name);

/* Stores the snapshot fd (duplicated) and waits until systemd has processed every message sent
 * so far (sd_notify_barrier, at most timeout_ms). 0, or -errno (not stored, or not confirmed). */
int mb_fdstore_keep_snapshot(mb_fdstore *st, int fd, uint32_t timeout_ms);

/* Waits until everything queued so far was sent. */
void mb_fdstore_flush(mb_fdstore *st);

/* Names. mb_fdstore_section_name writes s's memfd name; the parsers return true for a name of that
 * form (and its fields), false for anything else. */
void mb_fdstore_section_name(char *buf, size_t n, const mb_section *s);
bool mb_fdstore_parse_section(const char *name, uint64_t *id, pid_t *pid, uid_t *uid, gid_t *gid);
bool mb_fdstore_parse_owner(const char *name, uint64_t *id);

#endif
