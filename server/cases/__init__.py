"""Negative-rating cases (差评工单): open by themselves, follow-up workflow, appeals, deadlines."""
