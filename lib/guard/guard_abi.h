/* What the write guard's BPF programs (guard.bpf.c) and their loader (guard.cpp) share:
 * the map key and value, the refusal record, the operations. C, for both compilers. */
#ifndef AZOTE_GUARD_ABI_H
#define AZOTE_GUARD_ABI_H

#include <linux/types.h>

#define AZOTE_GUARD_MAX_INODES 4096
/* Rule flags. */
#define AZOTE_GUARD_ENTRIES 0x1 /* a directory: its entries are protected too */
#define AZOTE_GUARD_NOBODY 0x2  /* no uid may change it (the rule's uid is ignored) */

enum azote_guard_op {
  AZOTE_GUARD_OP_WRITE = 1, /* opened for writing */
  AZOTE_GUARD_OP_TRUNCATE = 2,
  AZOTE_GUARD_OP_UNLINK = 3, /* unlink or rmdir */
  AZOTE_GUARD_OP_RENAME = 4, /* renamed, or replaced by a rename */
  AZOTE_GUARD_OP_MOUNT = 5,  /* mounted over */
  AZOTE_GUARD_OP_CREATE = 6, /* an entry created in it */
};

struct azote_guard_key {
  __u64 dev; /* the kernel's dev_t of the inode's superblock (major << 20 | minor) */
  __u64 ino;
};

struct azote_guard_rule {
  __u32 uid; /* the one uid that may still change it, unless AZOTE_GUARD_NOBODY */
  __u32 flags;
};

struct azote_guard_denial {
  __u32 op;
  __u32 pid; /* thread group id */
  __u32 uid;
  __u32 pad;
  struct azote_guard_key rule;   /* the protected inode whose rule refused */
  struct azote_guard_key target; /* the inode acted on (0 if none yet) */
  char comm[16];
};

#endif
