// azote's write guard, in the kernel: BPF LSM programs that refuse, to every process
// whatever its uid (root included), any change to a protected inode: opening it for
// writing, truncating, unlinking, renaming it or over it, mounting on it; and for a
// protected directory the same for every entry in it (opening an entry for writing,
// unlinking, renaming into or out of it, creating one). Each protected inode names one uid that may
// still do so (the owner of azote-rot's state), or none. Every refusal is reported on a
// ring buffer with the pid, uid, command and the inode. lib/guard/guard.hpp loads it.
//
// Kernel structures are declared with only the fields used; CO-RE (preserve_access_index)
// relocates their offsets against the running kernel's BTF.
#include <linux/bpf.h>
#include <linux/types.h>

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "guard_abi.h"

#define EPERM 1
#define FMODE_WRITE 0x2

struct super_block {
  unsigned int s_dev;
} __attribute__((preserve_access_index));
struct inode {
  unsigned long i_ino;
  struct super_block *i_sb;
} __attribute__((preserve_access_index));
struct dentry {
  struct inode *d_inode;
  struct dentry *d_parent;
} __attribute__((preserve_access_index));
struct path {
  struct dentry *dentry;
} __attribute__((preserve_access_index));
struct file {
  struct path f_path;
  struct inode *f_inode;
  unsigned int f_mode;
} __attribute__((preserve_access_index));

char LICENSE[] SEC("license") = "Dual MIT/GPL";  // LSM programs must be GPL-compatible

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, AZOTE_GUARD_MAX_INODES);
  __type(key, struct azote_guard_key);
  __type(value, struct azote_guard_rule);
} protected_inodes SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 64 * 1024);
} denials SEC(".maps");

static void key_of(const struct inode *inode, struct azote_guard_key *k) {
  k->ino = inode ? BPF_CORE_READ(inode, i_ino) : 0;
  k->dev = inode ? BPF_CORE_READ(inode, i_sb, s_dev) : 0;
}

// Whether the caller is refused a change to `inode` itself (`self`) or to an entry of it
// (a directory, `self` 0).
static int refused(const struct inode *inode, int self) {
  if (!inode) return 0;
  struct azote_guard_key k = {};
  key_of(inode, &k);
  const struct azote_guard_rule *r = bpf_map_lookup_elem(&protected_inodes, &k);
  if (!r) return 0;
  if (!self && !(r->flags & AZOTE_GUARD_ENTRIES)) return 0;
  if (r->flags & AZOTE_GUARD_NOBODY) return 1;
  return (__u32)bpf_get_current_uid_gid() != r->uid;
}

// Reports the refusal (`rule`: the protected inode, `target`: the one acted on) and
// returns -EPERM.
static int deny(__u32 op, const struct inode *rule, const struct inode *target) {
  struct azote_guard_denial *e = bpf_ringbuf_reserve(&denials, sizeof *e, 0);
  if (e) {
    __builtin_memset(e, 0, sizeof *e);
    e->op = op;
    e->pid = bpf_get_current_pid_tgid() >> 32;
    e->uid = (__u32)bpf_get_current_uid_gid();
    key_of(rule, &e->rule);
    key_of(target, &e->target);
    bpf_get_current_comm(e->comm, sizeof e->comm);
    bpf_ringbuf_submit(e, 0);
  }
  return -EPERM;
}

SEC("lsm/file_open")
int BPF_PROG(azote_guard_file_open, struct file *file, int ret) {
  if (ret) return ret;
  if (!(BPF_CORE_READ(file, f_mode) & FMODE_WRITE)) return 0;
  struct inode *inode = BPF_CORE_READ(file, f_inode);
  if (refused(inode, 1)) return deny(AZOTE_GUARD_OP_WRITE, inode, inode);
  // An entry of a protected directory: its parent is the dentry's.
  struct dentry *parent = BPF_CORE_READ(file, f_path.dentry, d_parent);
  struct inode *dir = parent ? BPF_CORE_READ(parent, d_inode) : 0;
  if (refused(dir, 0)) return deny(AZOTE_GUARD_OP_WRITE, dir, inode);
  return 0;
}

SEC("lsm/path_truncate")
int BPF_PROG(azote_guard_path_truncate, const struct path *path, int ret) {
  if (ret) return ret;
  struct inode *inode = BPF_CORE_READ(path, dentry, d_inode);
  if (refused(inode, 1)) return deny(AZOTE_GUARD_OP_TRUNCATE, inode, inode);
  return 0;
}

SEC("lsm/inode_unlink")
int BPF_PROG(azote_guard_inode_unlink, struct inode *dir, struct dentry *dentry, int ret) {
  if (ret) return ret;
  struct inode *inode = BPF_CORE_READ(dentry, d_inode);
  if (refused(inode, 1)) return deny(AZOTE_GUARD_OP_UNLINK, inode, inode);
  if (refused(dir, 0)) return deny(AZOTE_GUARD_OP_UNLINK, dir, inode);
  return 0;
}

SEC("lsm/inode_rmdir")
int BPF_PROG(azote_guard_inode_rmdir, struct inode *dir, struct dentry *dentry, int ret) {
  if (ret) return ret;
  struct inode *inode = BPF_CORE_READ(dentry, d_inode);
  if (refused(inode, 1)) return deny(AZOTE_GUARD_OP_UNLINK, inode, inode);
  if (refused(dir, 0)) return deny(AZOTE_GUARD_OP_UNLINK, dir, inode);
  return 0;
}

SEC("lsm/inode_rename")
int BPF_PROG(azote_guard_inode_rename, struct inode *old_dir, struct dentry *old_dentry, struct inode *new_dir,
             struct dentry *new_dentry, int ret) {
  if (ret) return ret;
  struct inode *moved = BPF_CORE_READ(old_dentry, d_inode);
  struct inode *replaced = new_dentry ? BPF_CORE_READ(new_dentry, d_inode) : 0;
  if (refused(moved, 1)) return deny(AZOTE_GUARD_OP_RENAME, moved, moved);
  if (refused(old_dir, 0)) return deny(AZOTE_GUARD_OP_RENAME, old_dir, moved);
  if (refused(new_dir, 0)) return deny(AZOTE_GUARD_OP_RENAME, new_dir, moved);
  if (refused(replaced, 1)) return deny(AZOTE_GUARD_OP_RENAME, replaced, replaced);
  return 0;
}

// New entries in a protected directory: create, mkdir, symlink, link.
static int refuse_entry(struct inode *dir) {
  if (refused(dir, 0)) return deny(AZOTE_GUARD_OP_CREATE, dir, 0);
  return 0;
}

SEC("lsm/inode_create")
int BPF_PROG(azote_guard_inode_create, struct inode *dir, struct dentry *dentry, unsigned short mode, int ret) {
  if (ret) return ret;
  return refuse_entry(dir);
}

SEC("lsm/inode_mkdir")
int BPF_PROG(azote_guard_inode_mkdir, struct inode *dir, struct dentry *dentry, unsigned short mode, int ret) {
  if (ret) return ret;
  return refuse_entry(dir);
}

SEC("lsm/inode_symlink")
int BPF_PROG(azote_guard_inode_symlink, struct inode *dir, struct dentry *dentry, const char *name, int ret) {
  if (ret) return ret;
  return refuse_entry(dir);
}

SEC("lsm/inode_link")
int BPF_PROG(azote_guard_inode_link, struct dentry *old_dentry, struct inode *dir, struct dentry *new_dentry, int ret) {
  if (ret) return ret;
  return refuse_entry(dir);
}

SEC("lsm/sb_mount")
int BPF_PROG(azote_guard_sb_mount, const char *dev_name, const struct path *path, const char *type, unsigned long flags,
             void *data, int ret) {
  if (ret) return ret;
  struct inode *inode = BPF_CORE_READ(path, dentry, d_inode);
  if (refused(inode, 1)) return deny(AZOTE_GUARD_OP_MOUNT, inode, inode);
  return 0;
}

SEC("lsm/move_mount")
int BPF_PROG(azote_guard_move_mount, const struct path *from_path, const struct path *to_path, int ret) {
  if (ret) return ret;
  struct inode *inode = BPF_CORE_READ(to_path, dentry, d_inode);
  if (refused(inode, 1)) return deny(AZOTE_GUARD_OP_MOUNT, inode, inode);
  return 0;
}
