/*
 * A stand-in guest for checking the bench harness before the real built-in guest exists: a PVH
 * ELF (Xen note 18) whose 32-bit entry prints one line on COM1 and writes 0 to the debug-exit
 * port 0xf4. QEMU microvm then exits with status 1, azote-hv with status 0. It is not the
 * built-in guest and is never used for published numbers.
 */
        .section .note.Xen, "a", @note
        .balign 4
        .long   4               /* name size: "Xen\0" */
        .long   4               /* descriptor size */
        .long   18              /* XEN_ELFNOTE_PHYS32_ENTRY */
        .asciz  "Xen"
        .balign 4
        .long   pvh_entry
        .balign 4

        .text
        .code32
        .globl  pvh_entry
pvh_entry:
        mov     $message, %esi
        mov     $0x3f8, %dx
1:      movb    (%esi), %al
        test    %al, %al
        jz      2f
        outb    %al, %dx
        inc     %esi
        jmp     1b
2:      xor     %eax, %eax
        mov     $0xf4, %dx
        outb    %al, %dx
3:      hlt
        jmp     3b

        .section .rodata
message:
        .asciz  "azote-bench test guest: hello\n"
