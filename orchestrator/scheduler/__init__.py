"""Durable timers: retry backoffs and sleeps (ready runs in the future), wait timeouts and lease
expiry. The timers are database rows; this package only decides when to look at them."""
