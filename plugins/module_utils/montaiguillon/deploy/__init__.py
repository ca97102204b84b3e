"""The blue/green deploy in named parts: plan (decisions on plain data), lock, ledger, probe (HTTP), proxy (switch)."""
