"""FIQA teachers: label sources the student distils from (external, serfiq, crfiqa, norm)."""

from aikd.teachers.base import (
    Scores,
    Teacher,
    TeacherBatch,
    create_teacher,
    list_teachers,
    register_teacher,
    teacher_class,
)

__all__ = ["Scores", "Teacher", "TeacherBatch", "create_teacher", "list_teachers", "register_teacher", "teacher_class"]
