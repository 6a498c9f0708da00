"""Data engineering agent: turn a user's file into a clean, documented training table.

Before AutoGluon sees the data, the table is read robustly (`loading`, or `sql` for a query), every column is
profiled and typed (`profiling`, `column_types`), the columns that would silently poison a model are dropped
(constants, row ids, target leaks: `leakage`), a stratified holdout split is made (`splitting`) and a data card
is written (`data_card`), so every decision about the data is visible and reproducible. Every problem a user
can fix is raised as `DataError` naming the file or column.
"""
