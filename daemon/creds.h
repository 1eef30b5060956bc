/*
 * creds.h: what the broker may believe about a peer beyond SO_PEERCRED's uid and gid.
 */
#ifndef MB_CREDS_H
#define MB_CREDS_H

#include <sys/types.h>

#include <nng/nng.h>

/*
 * Supplementary groups of process pid from /proc/<pid>/status, provided its real and effective uid
 * are still uid (so a pid since reused by another user's process is not believed). Returns how
 * many were stored in groups (at most max), or -1.
 */
int mb_proc_groups(pid_t pid, uid_t uid, gid_t *groups, int max);

/*
 * The peer of an nng IPC pipe (SO_PEERCRED, taken at connect). 0, or an nng error. The options
 * are uint64: nng_pipe_get_int fails on them with NNG_EBADTYPE.
 */
int mb_pipe_peer(nng_pipe p, pid_t *pid, uid_t *uid, gid_t *gid);

#endif
