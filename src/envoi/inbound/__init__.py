"""Feedback over SMTP: bounces (DSNs and MTA texts) and complaints (ARF) received by the
inbound listener, parsed, classified and applied to the sends they name."""
