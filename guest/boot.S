/*
 * azote-guest CPL0 code: entry notes, the two boot entries, the AP trampoline and
 * the exception / service stubs. Under the PVM backend every CPL0 instruction is
 * emulated (~1000x slower than native), so this file only loads registers with
 * values computed at build time (tables.cpp) and drops to CPL3 with iretq; all
 * real work (boot info, ACPI, console, programs) runs in user mode.
 */
#include "layout.h"

/* ------------------------------------------------------------------ ELF notes */
	.section .note.azote, "a", @note
	.balign 4
	/* Azote 64-bit entry: long mode, CPL0, paging on; rbx = rsi = hvm_start_info. */
	.long 6, 8, 0x415a0001
	.asciz "Azote"
	.balign 4
	.quad azote_entry64
	/* Azote I/O window: virtqueues and I/O buffers go in the window the hypervisor
	 * announces (azote.iowin=START,SIZE), so cards map that window alone. */
	.long 6, 4, 0x415a0002
	.asciz "Azote"
	.balign 4
	.long 1
	/* Xen PVH entry (XEN_ELFNOTE_PHYS32_ENTRY): 32-bit, paging off, ebx = start_info. */
	.long 4, 4, 18
	.asciz "Xen"
	.balign 4
	.long azote_pvh_entry32
	/* An empty note: QEMU reads the PVH descriptor of a 64-bit ELF as 8 bytes, and
	 * this keeps the 4 bytes after it zero. */
	.long 0, 0, 0

/* ------------------------------------------------- exception and service stubs */
	.section .text.isr, "ax"
	.code64
	.globl azote_isr_stubs
azote_isr_stubs:		/* the IDT (tables.cpp) points at AZ_STUBS + 16 * vector */
.macro EXC v, has_err
	.org \v * AZ_STUB_SIZE
	.if \has_err == 0
	push $0
	.endif
	push $\v
	jmp isr_common
.endm
	EXC 0, 0
	EXC 1, 0
	EXC 2, 0
	.org 3 * AZ_STUB_SIZE
	jmp bp_entry		/* #BP: a breakpoint, or a service call */
	EXC 4, 0
	EXC 5, 0
	EXC 6, 0
	EXC 7, 0
	EXC 8, 1
	EXC 9, 0
	EXC 10, 1
	EXC 11, 1
	EXC 12, 1
	EXC 13, 1
	EXC 14, 1
	EXC 15, 0
	EXC 16, 0
	EXC 17, 1
	EXC 18, 0
	EXC 19, 0
	EXC 20, 0
	EXC 21, 1
	EXC 22, 0
	EXC 23, 0
	EXC 24, 0
	EXC 25, 0
	EXC 26, 0
	EXC 27, 0
	EXC 28, 0
	EXC 29, 1
	EXC 30, 1
	EXC 31, 0

	.org AZ_IDT_VECTORS * AZ_STUB_SIZE
/*
 * Every exception ends the guest, but the report is formatted in user mode: pass
 * (vector, rip, error code, cs, cr2) to azote_user_fault and iretq to it at CPL3,
 * using this (user-accessible) kernel stack below the trap frame as its stack.
 */
isr_common:
	pop %rdi
	pop %rdx
	pop %rsi
	pop %rcx
	mov %cr2, %r8
	mov %rsp, %rax
	and $-16, %rax
	sub $8, %rax
	push $AZ_SEL_UDATA
	push %rax
	push $AZ_USER_RFLAGS
	push $AZ_SEL_UCODE
	push $azote_user_fault
	iretq

/*
 * Service calls from CPL3. `int n` cannot be used (under the PVM backend a user
 * `int n` comes back as #UD), but int3 is delivered as #BP through the DPL3 gate.
 * The user calls one of the azote_svc_* functions below; its int3's return address
 * says which service it wants. Anything else is a real breakpoint.
 */
bp_entry:
	cmpq $svc_rdmsr_ret, (%rsp)
	je 1f
	cmpq $svc_wrmsr_ret, (%rsp)
	je 2f
	cmpq $svc_park_ret, (%rsp)
	je azote_park
	cmpq $svc_triple_ret, (%rsp)
	je 3f
	push $0
	push $3
	jmp isr_common
1:	rdmsr			/* ecx -> edx:eax */
	iretq
2:	wrmsr			/* ecx, edx:eax */
	iretq
3:	lidt AZ_NULL_IDTR	/* every exception now escalates to a triple fault */
	ud2
	.globl azote_park
azote_park:
	cli
1:	hlt
	jmp 1b

/* User-mode entry points of the services (all pages are user-accessible). */
	.globl azote_svc_rdmsr, azote_svc_wrmsr, azote_svc_park, azote_svc_triple
azote_svc_rdmsr:
	int3
svc_rdmsr_ret:
	ret
azote_svc_wrmsr:
	int3
svc_wrmsr_ret:
	ret
azote_svc_park:
	int3
svc_park_ret:
	jmp azote_svc_park
azote_svc_triple:
	int3
svc_triple_ret:
	jmp azote_svc_triple

/* ---------------------------------------------------------------- boot entries */
	.section .text.boot, "ax"

/* PVH: 32-bit protected mode, paging off, flat segments, ebx = hvm_start_info. */
	.code32
	.globl azote_pvh_entry32
azote_pvh_entry32:
	lgdt AZ_GDTR
	mov $azote_bsp_pvh64, %edi
	jmp common32

/* APs arrive here from the real-mode trampoline, in 32-bit protected mode with
 * CS = AZ_SEL_KCODE32 and DS still real-mode: no memory operands below. */
	.globl azote_ap_entry32
azote_ap_entry32:
	mov $azote_ap_entry64, %edi
common32:
	mov $AZ_CR4, %eax
	mov %eax, %cr4
	mov $AZ_PML4, %eax
	mov %eax, %cr3
	mov $AZ_MSR_EFER, %ecx
	rdmsr
	or $AZ_EFER_LME, %eax
	wrmsr
	mov $AZ_CR0, %eax
	mov %eax, %cr0
	ljmp $AZ_SEL_KCODE, $long64

	.code64
long64:
	mov %edi, %edi
	jmp *%rdi

/* Azote 64-bit entry: long mode with the hypervisor's tables, rbx = start_info. */
	.globl azote_entry64
azote_entry64:
	mov $AZ_PML4, %eax
	mov %rax, %cr3
	lgdt AZ_GDTR
	mov $AZ_CR4, %eax
	mov %rax, %cr4
	mov $AZ_CR0, %eax
	mov %rax, %cr0
	jmp bsp_common64

azote_bsp_pvh64:
	mov %ebx, %ebx
bsp_common64:
	mov $AZ_SEL_TSS, %eax
	ltr %ax
	lidt AZ_IDTR
	mov $AZ_BSP_RSP0_TOP, %esp
	push $AZ_SEL_UDATA
	push $azote_ustack_top - 8
	push $AZ_USER_RFLAGS
	push $AZ_SEL_UCODE
	push $azote_user_main
	mov %rbx, %rdi
	iretq

/* AP in long mode: take a slot, load the GDT/TSS the BSP prepared for it, and go
 * to azote_user_ap(slot) at CPL3. More APs than prepared slots: park. */
azote_ap_entry64:
	mov $1, %eax
	lock xadd %eax, azote_ap_next(%rip)
	cmp azote_ap_ready(%rip), %eax
	jae azote_park
	mov azote_ap_blocks(, %rax, 8), %rbx
	lgdt AZ_AP_GDTR(%rbx)
	mov $AZ_SEL_TSS, %ecx
	ltr %cx
	lidt AZ_IDTR
	lea AZ_AP_RSP0_TOP(%rbx), %rsp
	lea AZ_AP_USTACK_TOP - 8(%rbx), %rcx
	push $AZ_SEL_UDATA
	push %rcx
	push $AZ_USER_RFLAGS
	push $AZ_SEL_UCODE
	push $azote_user_ap
	mov %eax, %edi
	iretq

/* -------------------------------------------------------------- AP trampoline */
/* Copied by the smp program to a free page below 1 MiB; a SIPI starts it in real
 * mode with CS = page >> 4, IP = 0. Position independent (DS = CS). */
	.section .rodata.trampoline, "a"
	.code16
	.globl azote_trampoline, azote_trampoline_end
azote_trampoline:
	cli
	mov %cs, %ax
	mov %ax, %ds
	lgdtl tramp_gdtr - azote_trampoline
	mov %cr0, %eax
	or $1, %al
	mov %eax, %cr0
	ljmpl $AZ_SEL_KCODE32, $azote_ap_entry32
	.balign 4
tramp_gdtr:
	.word AZ_GDT_ENTRIES * 8 - 1
	.long AZ_GDT
azote_trampoline_end:
	.code64

	.section .note.GNU-stack, "", @progbits
