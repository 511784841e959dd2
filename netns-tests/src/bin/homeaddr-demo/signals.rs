//! Ctrl-C: the first signal sets the flag checked between steps and in
//! every wait; the second kills at once.

use homeaddr_netns_tests::scenario;

extern "C" fn on_signal(_sig: libc::c_int) {
    scenario::interrupt();
    let msg = b"\n*** interrupted: stopping after this step and cleaning up (Ctrl-C again to kill at once) ***\n";
    // SAFETY: write(2) is async-signal-safe; the buffer is valid.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
    }
}

pub(crate) fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction with a plain handler; SA_RESETHAND makes
        // the second signal take the default action (terminate).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESETHAND | libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}
