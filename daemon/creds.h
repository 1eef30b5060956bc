/*
 * creds.h: what the broker may believe about a peer beyond SO_PEERCRED's uid and gid.
 */
#ifndef MB_CREDS_H
#define MB_CREDS_H

#include <sys/types.h>

#include <nng/nng.h>

/*
 * Supplementary groups of the peer of a connected AF_UNIX socket, as the kernel recorded them at
 * connect (SO_PEERGROUPS). On success returns how many and sets *groups to a malloc'ed array the
 * caller frees; -1 (and *groups NULL) on failure.
 */
int mb_sock_peer_groups(int fd, gid_t **groups);

/*
 * Supplementary groups of the peer (pid, uid, gid from SO_PEERCRED) of one of the broker's own
 * connections: nng does not expose a pipe's descriptor, so the broker's descriptors are searched
 * for a socket whose peer credentials are exactly these, and SO_PEERGROUPS is read from it (the
 * RPC, .fd and admin connections are all such sockets). The groups are those the kernel recorded
 * when that process connected, never read from /proc (hidden by ProtectProc=invisible, and racy
 * against pid reuse). Costs one getsockopt per open descriptor, so callers ask only when uid and
 * primary gid did not already decide. Same return as mb_sock_peer_groups(); -1 for pid 0 (a peer
 * whose pid namespace hides it). Thread-safe.
 */
int mb_peer_groups(pid_t pid, uid_t uid, gid_t gid, gid_t **groups);

/*
 * The peer of an nng IPC pipe (SO_PEERCRED, taken at connect). 0, or an nng error. The options
 * are uint64: nng_pipe_get_int fails on them with NNG_EBADTYPE.
 */
int mb_pipe_peer(nng_pipe p, pid_t *pid, uid_t *uid, gid_t *gid);

#endif
