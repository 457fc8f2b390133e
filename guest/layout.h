/*
 * azote-guest memory and descriptor layout. Included by C++, by boot.S and by the
 * linker script (through the C preprocessor), so it holds #defines only.
 *
 * Everything the CPL0 path needs is at a fixed physical address, so the page
 * tables, GDT, IDT and TSS are computed at compile time (tables.cpp) and the boot
 * code only loads registers:
 *
 *   0x100000  PML4                      .fixed   (RW, in the file)
 *   0x101000  PDPT
 *   0x102000  4 page directories: identity map of 0-4 GiB, 2 MiB pages, U=1
 *   0x106000  system page: GDT, GDTR, IDTR, null IDTR, IDT, TSS + I/O bitmap
 *   0x107000  BSP IST1 stack (4 KiB)     .kstack  (NOBITS)
 *   0x108000  BSP kernel stack (8 KiB), rsp0
 *   0x10a000  exception / service stubs, 16 bytes each   .text
 *             ... code, rodata, notes, data, bss, user stack
 *
 * The guest's own page tables map every byte of 0-4 GiB user-accessible (the
 * programs run at CPL3 and read boot info, ACPI tables and MMIO directly); the
 * last GiB (MMIO hole) is mapped uncached. Nothing above 4 GiB is mapped.
 */
#ifndef AZOTE_GUEST_LAYOUT_H
#define AZOTE_GUEST_LAYOUT_H

#define AZ_IMAGE_BASE 0x100000
#define AZ_PML4 0x100000
#define AZ_PDPT 0x101000
#define AZ_PD 0x102000
#define AZ_PD_COUNT 4
#define AZ_SYS 0x106000

/* Offsets inside the system page. */
#define AZ_SYS_GDT 0x000       /* AZ_GDT_ENTRIES x 8 bytes */
#define AZ_SYS_GDTR 0x040      /* u16 limit, u64 base */
#define AZ_SYS_IDTR 0x050
#define AZ_SYS_NULL_IDTR 0x060 /* limit 0: any exception escalates to a triple fault */
#define AZ_SYS_IDT 0x100       /* AZ_IDT_VECTORS x 16 bytes */
#define AZ_SYS_TSS 0x400       /* TSS (104 bytes) + I/O permission bitmap */

#define AZ_GDT (AZ_SYS + AZ_SYS_GDT)
#define AZ_GDTR (AZ_SYS + AZ_SYS_GDTR)
#define AZ_IDTR (AZ_SYS + AZ_SYS_IDTR)
#define AZ_NULL_IDTR (AZ_SYS + AZ_SYS_NULL_IDTR)
#define AZ_TSS (AZ_SYS + AZ_SYS_TSS)
#define AZ_IDT (AZ_SYS + AZ_SYS_IDT)

#define AZ_KSTACK 0x107000
#define AZ_BSP_IST1_TOP 0x108000
#define AZ_BSP_RSP0_TOP 0x10a000
#define AZ_KSTACK_END 0x10a000
#define AZ_TEXT 0x10a000

/* Exception and service stubs: stub for vector v at AZ_STUBS + v * AZ_STUB_SIZE. */
#define AZ_STUBS AZ_TEXT
#define AZ_STUB_SIZE 16
#define AZ_IDT_VECTORS 32


/* GDT (same layout for every CPU; APs get a copy with their own TSS). */
#define AZ_GDT_ENTRIES 8
#define AZ_SEL_KCODE 0x08   /* 64-bit code, DPL0 */
#define AZ_SEL_KDATA 0x10
#define AZ_SEL_UDATA 0x1b   /* index 3, RPL3 */
#define AZ_SEL_UCODE 0x23   /* index 4, 64-bit code, DPL3, RPL3 */
#define AZ_SEL_TSS 0x28     /* 16-byte system descriptor, indexes 5-6 */
#define AZ_SEL_KCODE32 0x38 /* 32-bit code, used by the AP trampoline */

/*
 * TSS with an I/O permission bitmap granting ports 0 - 0x3fff. IOPL = 3 alone is
 * not enough under the PVM backend: user mode really runs with IOPL = 0 and every
 * `in`/`out` traps to KVM's instruction emulator, which then consults this bitmap.
 */
#define AZ_TSS_SIZE 104
#define AZ_TSS_RSP0 4
#define AZ_TSS_IST1 36
#define AZ_TSS_IOMAP 102
#define AZ_IOBITMAP_PORTS 0x4000
#define AZ_TSS_LIMIT (AZ_TSS_SIZE + AZ_IOBITMAP_PORTS / 8) /* includes the 0xff terminator byte */

/* Control register values loaded on every CPU. */
#define AZ_CR0 0x80010033 /* PG | WP | NE | ET | MP | PE (EM = TS = 0: SSE usable) */
#define AZ_CR4 0x00000620 /* OSXMMEXCPT | OSFXSR | PAE */
#define AZ_MSR_EFER 0xc0000080
#define AZ_EFER_LME 0x100
#define AZ_USER_RFLAGS 0x3002 /* IOPL = 3, IF = 0 */

/* Per-AP block (allocated and filled by the BSP's user-mode smp program). */
#define AZ_MAX_CPUS 64
#define AZ_AP_BLOCK_SIZE 0x8000
#define AZ_AP_GDT 0x000
#define AZ_AP_GDTR 0x040
#define AZ_AP_TSS 0x400
#define AZ_AP_IST1_TOP 0x2000
#define AZ_AP_RSP0_TOP 0x4000
#define AZ_AP_USTACK_TOP 0x8000

#define AZ_USTACK_SIZE 0x10000 /* BSP user stack */

#endif
