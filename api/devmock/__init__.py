"""Development mock endpoints: receive webhooks inside WHK itself and show what arrived."""
